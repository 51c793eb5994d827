# `cmake --install` of the SDK: headers, static libraries, the CMake package (TokenGateConfig,
# TokenGateConfigVersion, exported TokenGate:: targets, tokengate_add_node) and pkg-config files.
# Binaries are installed by their own folders; `cmake --install <build> --strip` strips them
# (what docker/Dockerfile does).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
set(TG_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/tokengate)
set(TG_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/TokenGate)

# Exported names: TokenGate::node, TokenGate::client, ...
set_target_properties(tg_node PROPERTIES EXPORT_NAME node)
set_target_properties(tg_node_app PROPERTIES EXPORT_NAME node_app)
set_target_properties(tg_node_main PROPERTIES EXPORT_NAME node_main)
set_target_properties(tg_node_link PROPERTIES EXPORT_NAME node_link)
set_target_properties(tg_node_executor PROPERTIES EXPORT_NAME node_executor)
set_target_properties(tg_node_ops PROPERTIES EXPORT_NAME node_ops)
set_target_properties(tg_node_registry PROPERTIES EXPORT_NAME node_registry)
set_target_properties(tg_client PROPERTIES EXPORT_NAME client)
set_target_properties(tg_common PROPERTIES EXPORT_NAME common)
set_target_properties(tg_schema PROPERTIES EXPORT_NAME schema)
set_target_properties(tg_security PROPERTIES EXPORT_NAME security)
set_target_properties(tg_security_flags PROPERTIES EXPORT_NAME security_flags)

install(TARGETS tg_schema tg_common tg_node_registry tg_node_ops tg_node_executor tg_node_link
                tg_node tg_node_app tg_node_main tg_client tg_security tg_security_flags
        EXPORT TokenGateTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${TG_INSTALL_INCLUDEDIR})

# Public headers, keeping the in-tree paths ("common/value.h", "node/registry/registry.h").
install(DIRECTORY common DESTINATION ${TG_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(DIRECTORY node DESTINATION ${TG_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(FILES client/client.h DESTINATION ${TG_INSTALL_INCLUDEDIR}/client)
install(FILES ${PROJECT_BINARY_DIR}/schema/tokengate.capnp.h DESTINATION ${TG_INSTALL_INCLUDEDIR})
install(FILES schema/tokengate.capnp DESTINATION ${CMAKE_INSTALL_DATADIR}/tokengate)

install(EXPORT TokenGateTargets NAMESPACE TokenGate:: DESTINATION ${TG_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/TokenGateConfig.cmake.in
  ${PROJECT_BINARY_DIR}/TokenGateConfig.cmake
  INSTALL_DESTINATION ${TG_INSTALL_CMAKEDIR}
  PATH_VARS TG_INSTALL_INCLUDEDIR)
# 0.x: minor versions may break the API, so a request for 0.1 accepts 0.1.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/TokenGateConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/TokenGateConfig.cmake
              ${PROJECT_BINARY_DIR}/TokenGateConfigVersion.cmake
              cmake/TokenGateNode.cmake
        DESTINATION ${TG_INSTALL_CMAKEDIR})

# pkg-config. The prefix is fixed at configure time; `cmake --install --prefix P` elsewhere
# rewrites it at install time (install(CODE) below).
foreach(pc tokengate-node tokengate-client)
  configure_file(cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc.in @ONLY)
  install(CODE "
    file(READ \"${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc.in\" _pc)
    string(REPLACE \"prefix=${CMAKE_INSTALL_PREFIX}\" \"prefix=\${CMAKE_INSTALL_PREFIX}\" _pc \"\${_pc}\")
    file(WRITE \"${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc\" \"\${_pc}\")")
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
