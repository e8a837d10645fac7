# rt_shim: not a runner. The real-time audit's hooks as a shared library (libauditor_rt.so) that
# a Python worker preloads (LD_PRELOAD) to audit a Python-hosted runtime's inference
# (src/rt_shim.cpp; device_runner/rt_shim.py builds it and loads it with ctypes). Host only.
add_library(auditor_rt_shim SHARED src/rt_shim.cpp src/rt_audit.cpp src/rt_hooks.cpp src/rt_symbols.cpp
            src/json.cpp src/realtime.cpp)
target_include_directories(auditor_rt_shim PRIVATE src)
target_compile_definitions(auditor_rt_shim PRIVATE AUDITOR_RT_PRELOAD)
target_link_libraries(auditor_rt_shim PRIVATE Threads::Threads ${CMAKE_DL_LIBS})
set_target_properties(auditor_rt_shim PROPERTIES OUTPUT_NAME auditor_rt)
