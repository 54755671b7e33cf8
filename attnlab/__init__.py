"""attnlab: what does each attention variant cost, and what accuracy does it buy, as sequences get long?

Public plugin API:

    from attnlab import Attention, Capabilities, register_attention, build_attention, available_attentions
"""

from attnlab.threads import prefer_passive_openmp

prefer_passive_openmp()  # before torch is imported: OpenMP reads its wait policy once (attnlab/threads.py)

from attnlab.attention import (  # noqa: E402
    Attention,
    Capabilities,
    GateSpec,
    available_attentions,
    build_attention,
    get_attention_class,
    register_attention,
)
from attnlab.errors import AttnlabError  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "Attention",
    "AttnlabError",
    "Capabilities",
    "GateSpec",
    "available_attentions",
    "build_attention",
    "get_attention_class",
    "register_attention",
]
