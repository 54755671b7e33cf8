"""The built-in attention variants, one module and one registered class each. Imported by the registry
on its first query (registry.BUILTIN_MODULES), never at package import."""
