# libtorch (host only): links the installed torch wheel's libtorch. Variables (set by
# compilers/torchscript_jit.py):
#   TORCH_DIR   the installed `torch` package directory (include/, lib/)
#   TORCH_CXX11_ABI  1 or 0, as torch._C._GLIBCXX_USE_CXX11_ABI
if(NOT TORCH_DIR)
  message(FATAL_ERROR "the libtorch backend needs -DTORCH_DIR=<site-packages/torch>")
endif()
if(CMAKE_CROSSCOMPILING)
  message(FATAL_ERROR "the libtorch backend links the host's torch wheel; it has no ARM build")
endif()
set(AUDITOR_DYNAMIC_LIBSTDCXX ON)
auditor_add_runner(auditor-runner-libtorch ${CMAKE_CURRENT_SOURCE_DIR}/backends/backend_libtorch.cpp)
target_include_directories(auditor-runner-libtorch SYSTEM PRIVATE
  ${TORCH_DIR}/include ${TORCH_DIR}/include/torch/csrc/api/include)
target_compile_definitions(auditor-runner-libtorch PRIVATE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI}
  AUDITOR_TORCH_VERSION="${TORCH_WHEEL_VERSION}")
# --no-as-needed: libtorch_cpu registers the CPU operators from static initialisers only
target_link_libraries(auditor-runner-libtorch PRIVATE -Wl,--no-as-needed
  ${TORCH_DIR}/lib/libtorch.so ${TORCH_DIR}/lib/libtorch_cpu.so ${TORCH_DIR}/lib/libc10.so -Wl,--as-needed)
set_target_properties(auditor-runner-libtorch PROPERTIES BUILD_RPATH ${TORCH_DIR}/lib)
