"""Compiler/runtime adapters behind one interface (`compilers.base`), found via `compilers.registry`."""
