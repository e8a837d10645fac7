# TVM backend: loads a relax VM module (.so from tvm.compile + export_library) and runs its
# "main" through TVM's C++ runtime (backend_tvm.cpp).
#
# Variables (the Python side, compilers/tvm_relax.py, passes them):
#   TVM_WHEEL_DIR      the installed `tvm` package directory (apache-tvm wheel): include/,
#                      src/runtime/, lib/libtvm_runtime.so
#   TVM_FFI_DIR        the installed `tvm_ffi` package directory (apache-tvm-ffi wheel):
#                      include/, src/ffi/, lib/libtvm_ffi.so
#   TVM_WHEEL_VERSION  apache-tvm's version (the runner reports it as the backend version)
#   TVM_FFI_WHEEL_VERSION  apache-tvm-ffi's version (in the runner's notes)
#   TVM_RUNTIME        `wheel`: link the wheel's libtvm_runtime.so / libtvm_ffi.so (host
#                      only; the runner's RPATH points at them); `source`: build the runtime
#                      from the sources the wheels ship into a static library linked into the
#                      runner (the only way for a cross build). Default: wheel on the host,
#                      source when cross compiling.
#
# The wheels ship the runtime's sources but not six headers they include; minimal versions
# written for the runner are in tvm_shim/ (used only where the wheel has none).

set(TVM_WHEEL_DIR "" CACHE PATH "installed apache-tvm package directory (tvm/)")
set(TVM_FFI_DIR "" CACHE PATH "installed apache-tvm-ffi package directory (tvm_ffi/)")
set(TVM_WHEEL_VERSION "" CACHE STRING "apache-tvm version, reported by the runner")
set(TVM_FFI_WHEEL_VERSION "" CACHE STRING "apache-tvm-ffi version, in the runner's notes")
if(CMAKE_CROSSCOMPILING)
  set(_auditor_tvm_default_runtime source)
else()
  set(_auditor_tvm_default_runtime wheel)
endif()
set(TVM_RUNTIME ${_auditor_tvm_default_runtime} CACHE STRING "wheel or source (see tvm.cmake)")

if(AUDITOR_STATIC)
  message(FATAL_ERROR "TVM backend: the runner dlopens the model .so, so it cannot be linked "
                      "-static (AUDITOR_STATIC=OFF; libstdc++ is still linked in)")
endif()

foreach(_check IN ITEMS "${TVM_WHEEL_DIR}/include/tvm/runtime/base.h"
                        "${TVM_FFI_DIR}/include/tvm/ffi/c_api.h")
  if(NOT EXISTS "${_check}")
    message(FATAL_ERROR "TVM backend: ${_check} not found; set -DTVM_WHEEL_DIR=<site-packages>/tvm "
                        "and -DTVM_FFI_DIR=<site-packages>/tvm_ffi")
  endif()
endforeach()

set(_auditor_tvm_shim ${CMAKE_CURRENT_LIST_DIR}/tvm_shim)
# The wheels' headers first: the shim only fills in what they lack.
set(_auditor_tvm_includes ${TVM_WHEEL_DIR}/include ${TVM_FFI_DIR}/include
    ${_auditor_tvm_shim}/include)

auditor_add_runner(auditor-runner-tvm ${CMAKE_CURRENT_LIST_DIR}/backend_tvm.cpp)
target_include_directories(auditor-runner-tvm PRIVATE ${_auditor_tvm_includes})
target_compile_definitions(auditor-runner-tvm PRIVATE
  AUDITOR_TVM_WHEEL_VERSION="${TVM_WHEEL_VERSION}"
  AUDITOR_TVM_FFI_WHEEL_VERSION="${TVM_FFI_WHEEL_VERSION}" AUDITOR_TVM_RUNTIME="${TVM_RUNTIME}")

if(TVM_RUNTIME STREQUAL "wheel")
  if(CMAKE_CROSSCOMPILING)
    message(FATAL_ERROR "TVM backend: TVM_RUNTIME=wheel links the host's libraries; a cross "
                        "build needs TVM_RUNTIME=source")
  endif()
  set(_auditor_tvm_libs ${TVM_FFI_DIR}/lib/libtvm_ffi.so ${TVM_WHEEL_DIR}/lib/libtvm_runtime.so)
  foreach(_lib IN LISTS _auditor_tvm_libs)
    if(NOT EXISTS "${_lib}")
      message(FATAL_ERROR "TVM backend: ${_lib} not found (TVM_RUNTIME=wheel)")
    endif()
  endforeach()
  # The backend calls only tvm-ffi; libtvm_runtime.so must still be loaded (it registers
  # the relax VM, its builtins and the CPU device), hence --no-as-needed. libtvm_ffi.so
  # comes first: libtvm_runtime.so's RUNPATH ($ORIGIN) does not reach tvm_ffi/lib, its
  # dependency is met by the already-loaded soname.
  target_link_libraries(auditor-runner-tvm PRIVATE
    -Wl,--push-state,--no-as-needed ${_auditor_tvm_libs} -Wl,--pop-state ${CMAKE_DL_LIBS})
  set_target_properties(auditor-runner-tvm PROPERTIES
    BUILD_RPATH "${TVM_FFI_DIR}/lib;${TVM_WHEEL_DIR}/lib"
    INSTALL_RPATH "${TVM_FFI_DIR}/lib;${TVM_WHEEL_DIR}/lib")
elseif(TVM_RUNTIME STREQUAL "source")
  # Relative includes of the runtime sources ("../support/bytes_io.h" from src/runtime,
  # "../../support/..." from src/runtime/vm) resolve against -I directories; these anchors
  # make them land on copies of the shim's src/support headers.
  set(_anchor ${CMAKE_CURRENT_BINARY_DIR}/tvm_shim_src)
  file(MAKE_DIRECTORY ${_anchor}/runtime/vm)
  foreach(_h bytes_io.h base64.h utils.h)
    configure_file(${_auditor_tvm_shim}/src/support/${_h} ${_anchor}/support/${_h} COPYONLY)
  endforeach()

  # tvm-ffi: its core and "extra" C++ API (modules, dynamic libraries, JSON, reflection), as
  # its own CMakeLists builds them (that file wants CMake >= 3.26, hence listed here).
  file(GLOB _auditor_tvm_ffi_sources ${TVM_FFI_DIR}/src/ffi/*.cc ${TVM_FFI_DIR}/src/ffi/extra/*.cc)
  list(FILTER _auditor_tvm_ffi_sources EXCLUDE REGEX "backtrace_win\\.cc$")
  # TVM's runtime: what loading a relax VM module and running it on the CPU needs.
  set(_rt ${TVM_WHEEL_DIR}/src/runtime)
  set(_auditor_tvm_runtime_sources
    ${_rt}/cpu_device_api.cc ${_rt}/device_api.cc ${_rt}/file_utils.cc ${_rt}/logging.cc
    ${_rt}/module.cc ${_rt}/tensor.cc ${_rt}/thread_pool.cc ${_rt}/threading_backend.cc
    ${_rt}/workspace_pool.cc ${_rt}/memory/memory_manager.cc
    ${_rt}/vm/builtin.cc ${_rt}/vm/bytecode.cc ${_rt}/vm/executable.cc ${_rt}/vm/vm.cc)

  add_library(auditor_tvm_runtime STATIC ${_auditor_tvm_ffi_sources} ${_auditor_tvm_runtime_sources})
  target_include_directories(auditor_tvm_runtime PUBLIC ${_auditor_tvm_includes}
                             PRIVATE ${_anchor}/runtime ${_anchor}/runtime/vm)
  target_compile_definitions(auditor_tvm_runtime PRIVATE
    TVM_FFI_USE_LIBBACKTRACE=0 TVM_FFI_BACKTRACE_ON_SEGFAULT=0 NDEBUG)
  # -O2 as the wheels' own builds; the runner's Release flags (-O3) come before it.
  target_compile_options(auditor_tvm_runtime PRIVATE -O2 -w)
  set_target_properties(auditor_tvm_runtime PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(auditor_tvm_runtime PUBLIC Threads::Threads ${CMAKE_DL_LIBS})

  # Every object: most of the runtime is registrations run by static initialisers (the VM's
  # loader, vm.builtin.*, device_api.cpu) that nothing references by name.
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.24)
    target_link_libraries(auditor-runner-tvm PRIVATE "$<LINK_LIBRARY:WHOLE_ARCHIVE,auditor_tvm_runtime>")
  else()
    target_link_libraries(auditor-runner-tvm PRIVATE
      -Wl,--whole-archive auditor_tvm_runtime -Wl,--no-whole-archive Threads::Threads ${CMAKE_DL_LIBS})
  endif()
  # A model .so leaves the runtime's C entry points (TVMFFI*, TVMBackend*) undefined; the
  # runner exports exactly those so dlopen binds them to the copy linked in.
  target_link_options(auditor-runner-tvm PRIVATE
    "LINKER:--dynamic-list=${_auditor_tvm_shim}/runner_exports.list")
else()
  message(FATAL_ERROR "TVM backend: TVM_RUNTIME must be wheel or source, not '${TVM_RUNTIME}'")
endif()
