"""Training stages. Each is a config dataclass plus one trainer class; the shared machinery (processes,
precision, checkpoints, metrics) is in ``common``, the batch layout in ``packing``, the LM loss in ``token_loss``.

* ``sft``: supervised fine-tuning on conversations (``SFTConfig``, ``SFTTrainer``).
"""

from chatforge.train.sft import SFTConfig, SFTResult, SFTTrainer

__all__ = ["SFTConfig", "SFTResult", "SFTTrainer"]
