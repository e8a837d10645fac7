# probe: a known-answer backend for the runner itself (the real-time audit's tests). Its "model"
# is a text file of behaviours, one a line, that every inference (or only the first) performs:
#   alloc N BYTES | first-alloc N BYTES | lock N | syscall N | thread N | touch BYTES | fail
# No variables; host or cross, static or not.
auditor_add_runner(auditor-runner-probe ${CMAKE_CURRENT_SOURCE_DIR}/backends/backend_probe.cpp)
