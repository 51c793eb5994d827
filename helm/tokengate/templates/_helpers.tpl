{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "tokengate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokengate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tokengate.coordinatorName" -}}
{{- printf "%s-coordinator" (include "tokengate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokengate.nodeName" -}}
{{- printf "%s-node" (include "tokengate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokengate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tokengate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokengate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" . "component" "coordinator"). */}}
{{- define "tokengate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokengate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tokengate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokengate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; call with (dict "ctx" . "repository" "..." "digest" "sha256:..."|"").
     A digest pins the image (repo@sha256:...) and wins over the tag. */}}
{{- define "tokengate.image" -}}
{{- $repo := .repository }}
{{- if .ctx.Values.image.registry }}{{ $repo = printf "%s/%s" .ctx.Values.image.registry $repo }}{{ end }}
{{- if .digest }}
{{- printf "%s@%s" $repo .digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .ctx.Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tokengate.secretName" -}}
{{- default (printf "%s-gateway" (include "tokengate.fullname" .)) .Values.gateway.existingSecret }}
{{- end }}

{{- define "tokengate.secretKey" -}}
{{- if .Values.gateway.existingSecret }}{{ .Values.gateway.existingSecretKey }}{{ else }}gateway-token{{ end }}
{{- end }}

{{/* A node group's image: group image.repository/tag/digest over the node image; a digest
     pins it (repo@sha256:...). A group that names no image of its own runs the node image,
     image.nodeDigest included. Call with (dict "ctx" . "group" $g). */}}
{{- define "tokengate.groupImage" -}}
{{- $img := .group.image | default dict }}
{{- $repo := $img.repository | default .ctx.Values.image.nodeRepository }}
{{- if .ctx.Values.image.registry }}{{ $repo = printf "%s/%s" .ctx.Values.image.registry $repo }}{{ end }}
{{- $digest := $img.digest }}
{{- if and (not $digest) (not $img.repository) (not $img.tag) }}{{ $digest = .ctx.Values.image.nodeDigest }}{{ end }}
{{- if $digest }}
{{- printf "%s@%s" $repo $digest }}
{{- else }}
{{- printf "%s:%s" $repo ($img.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
CurveZMQ keys (docs/security.md, "Helm"). One Secret with the keys server.key, server.pub,
node.key, allow-nodes, allow-clients: `curve.existingSecret`, or the one this chart writes from
the keys given in values (curve-secret.yaml), named "<fullname>-curve". The chart never generates
or rotates keys. `insecure: true` turns CURVE off (plain TCP, TG_INSECURE=1).
*/}}
{{- define "tokengate.curveSecretName" -}}
{{- default (printf "%s-curve" (include "tokengate.fullname" .)) .Values.curve.existingSecret }}
{{- end }}

{{- define "tokengate.curveEnv" -}}
{{- $ctx := .ctx }}
{{- if $ctx.Values.insecure }}
- name: TG_INSECURE
  value: "1"
{{- else if eq .component "coordinator" }}
- name: TG_CURVE_SECRET_KEY_FILE
  value: /etc/tokengate/curve/server.key
- name: TG_CURVE_ALLOW_NODES
  value: /etc/tokengate/curve/allow-nodes
- name: TG_CURVE_ALLOW_CLIENTS
  value: /etc/tokengate/curve/allow-clients
{{- else }}
- name: TG_CURVE_SECRET_KEY_FILE
  value: /etc/tokengate/curve/node.key
- name: TG_CURVE_SERVER_KEY
  value: /etc/tokengate/curve/server.pub
{{- end }}
{{- end }}

{{- define "tokengate.curveMount" -}}
{{- if not .Values.insecure }}
- name: curve-keys
  mountPath: /etc/tokengate/curve
  readOnly: true
{{- end }}
{{- end }}

{{/* Each component gets only the keys it needs: nodes never see the server's secret key. */}}
{{- define "tokengate.curveVolume" -}}
{{- $ctx := .ctx }}
{{- if not $ctx.Values.insecure }}
- name: curve-keys
  secret:
    secretName: {{ include "tokengate.curveSecretName" $ctx }}
    defaultMode: 0440
    items:
      {{- if eq .component "coordinator" }}
      - {key: server.key, path: server.key}
      - {key: allow-nodes, path: allow-nodes}
      - {key: allow-clients, path: allow-clients}
      {{- else }}
      - {key: node.key, path: node.key}
      - {key: server.pub, path: server.pub}
      {{- end }}
{{- end }}
{{- end }}
