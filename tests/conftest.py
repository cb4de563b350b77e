# tests/plugins holds source modules that register at import: loaded by STREAM_REC_SOURCE_MODULES in a
# process of their own (tests/unit/test_source_plugin.py), never by collecting doctests here.
collect_ignore = ["plugins"]
