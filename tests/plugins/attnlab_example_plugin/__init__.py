"""An example third-party attention plugin, installed in the tests through entry-point metadata only.

A real package would declare, in its pyproject.toml:

    [project.entry-points."attnlab.attention"]
    sigmoid = "attnlab_example_plugin.sigmoid:SigmoidAttention"

The class is a plain `attnlab.Attention` subclass: the registry names it after the entry point.
"""
