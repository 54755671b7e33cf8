"""Linear attention with a positive feature map (`linear`, `performer`): chunk.py the kernels."""
