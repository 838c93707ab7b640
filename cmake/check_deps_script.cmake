# ctest's module_dependency_rules: the include check of module_deps.cmake, outside a configure.
include(${CMAKE_CURRENT_LIST_DIR}/module_deps.cmake)
kvtier_check_module_deps()
message(STATUS "module dependency rules hold")
