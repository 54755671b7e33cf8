"""Every attnlab attention variant inside Hugging Face transformers models (`pip install attnlab[hf]`).

    import attnlab.hf  # registers attnlab_<name> for every variant (built-ins and plugins)
    model = AutoModelForCausalLM.from_pretrained("my/model", attn_implementation="attnlab_linear")
    # or, with hyperparameters, on a model already built:
    attnlab.hf.use(model, "performer", features=64)
    model.save_pretrained(path)
    model = attnlab.hf.load(path, AutoModelForCausalLM)  # the variant, its hyperparameters and weights

Importing this module needs transformers; the rest of attnlab never imports it.
"""

from attnlab.hf.attention import kernel_for
from attnlab.hf.saved import load
from attnlab.hf.switch import INSTALL_HINT, build_kernels, register, sub_configs, use

register()

__all__ = ["INSTALL_HINT", "build_kernels", "kernel_for", "load", "register", "sub_configs", "use"]
