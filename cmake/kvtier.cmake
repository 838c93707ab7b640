# Shared build settings and helpers for kvtier's modules.

set(KVTIER_ROOT ${CMAKE_CURRENT_SOURCE_DIR})

add_library(kvtier_build_flags INTERFACE)
target_include_directories(kvtier_build_flags INTERFACE ${KVTIER_ROOT})
target_compile_options(kvtier_build_flags INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
# GCC 12's -Wrestrict misfires inside libstdc++'s string operator+ at -O3 (GCC bug 105329).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(kvtier_build_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Wno-restrict>)
endif()
if(KVTIER_WERROR)
  target_compile_options(kvtier_build_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(KVTIER_NATIVE)
  target_compile_options(kvtier_build_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()
if(KVTIER_SANITIZE)
  target_compile_options(kvtier_build_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${KVTIER_SANITIZE} -fno-omit-frame-pointer>)
  target_link_options(kvtier_build_flags INTERFACE -fsanitize=${KVTIER_SANITIZE})
endif()

# kvtier_library(NAME module SOURCES ... DEPS ...): one static library per module.
function(kvtier_library module)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;EXTERNAL" ${ARGN})
  add_library(kvtier_${module} STATIC ${ARG_SOURCES})
  target_link_libraries(kvtier_${module} PUBLIC kvtier_build_flags ${ARG_EXTERNAL})
  foreach(dep ${ARG_DEPS})
    list(FIND KVTIER_MODULE_DEPS_${module} ${dep} allowed)
    if(allowed EQUAL -1)
      message(FATAL_ERROR "module ${module} may not link ${dep} (DESIGN.md §2)")
    endif()
    target_link_libraries(kvtier_${module} PUBLIC kvtier_${dep})
  endforeach()
endfunction()

