"""A deliberately broken attention plugin: importing it fails, as a plugin with a missing dependency
would. The registry must report it by name and keep every other variant working."""

raise ImportError("attnlab_broken_plugin needs the package 'no_such_dependency', which is not installed")
