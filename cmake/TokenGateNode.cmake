# tokengate_add_node(NAME SOURCES src... [LIBRARIES lib...])
#
# Builds the node executable NAME from your operation sources (files with TG_OPERATION) and the
# standard node main (TokenGate::node_main: the same flags, TG_* environment, health file and
# SIGTERM drain as tokengate-node, so the Docker image entrypoint and the Helm probes work
# unchanged). The built-in operations are offered too. LIBRARIES are linked privately (your own
# dependencies). Operation sources must be compiled into the executable itself: a TG_OPERATION in
# a static library is only linked when something else references its object file.
#
# Included by TokenGateConfig.cmake (installed SDK) and by the TokenGate tree itself.
function(tokengate_add_node NAME)
  cmake_parse_arguments(PARSE_ARGV 1 TG "" "" "SOURCES;LIBRARIES")
  if(NOT TG_SOURCES)
    message(FATAL_ERROR "tokengate_add_node(${NAME}): SOURCES is required")
  endif()
  if(TG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "tokengate_add_node(${NAME}): unknown arguments ${TG_UNPARSED_ARGUMENTS}")
  endif()
  add_executable(${NAME} ${TG_SOURCES})
  target_compile_features(${NAME} PRIVATE cxx_std_20)
  target_link_libraries(${NAME} PRIVATE TokenGate::node_main ${TG_LIBRARIES})
endfunction()
