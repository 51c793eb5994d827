{{/*
Extension points shared by the coordinator, node and node-group pods (issue 15 item 4):
commonAnnotations on every object, extra volumes/mounts, init containers and sidecars, and the
gateway's TLS files. Kept apart from _helpers.tpl so chart changes elsewhere merge cleanly.
*/}}

{{/* metadata.annotations: commonAnnotations merged under the object's own (which win).
     Call with (dict "ctx" $ "extra" MAP) as `  {{- include ... }}` under metadata (no nindent:
     it brings its own newline and indentation); renders nothing when both are empty. */}}
{{- define "tokengate.annotations" -}}
{{- $all := merge (deepCopy (.extra | default dict)) (deepCopy (.ctx.Values.commonAnnotations | default dict)) -}}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{/* Is the gateway serving TLS (--tls-cert/--tls-key from gateway.tls.secretName)? */}}
{{- define "tokengate.gatewayTLS" -}}
{{- if and .Values.gateway.tls.enabled .Values.gateway.tls.secretName }}true{{ end }}
{{- end }}

{{/* HTTP or HTTPS for probes, the helm test and the ServiceMonitor. */}}
{{- define "tokengate.gatewayScheme" -}}
{{- if include "tokengate.gatewayTLS" . }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* A probe from values with the gateway's scheme set on httpGet probes.
     Call with (dict "ctx" $ "probe" MAP). */}}
{{- define "tokengate.gatewayProbe" -}}
{{- $p := deepCopy .probe }}
{{- if $p.httpGet }}
{{- $_ := set $p.httpGet "scheme" (include "tokengate.gatewayScheme" .ctx) }}
{{- end }}
{{- toYaml $p }}
{{- end }}
