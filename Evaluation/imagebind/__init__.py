"""ImageBind (imagebind_huge) vision and audio embeddings for image/video-to-music relevance,
written in plain torch + PIL + numpy (no torchvision / torchaudio / timm / pytorchvideo).

- `config`: sizes and the checkpoint's tensor names and shapes as data (rule-generated);
- `model`: the vision and audio towers with the reference parameter names;
- `preprocess`: image / video / audio preprocessing as the reference `imagebind.data` does it;
- `relevance`: strict loading of `imagebind_huge.pth` and the relevance scorer used by
  `Evaluation.image2music|video2music score --relevance_model imagebind`.
"""

from Evaluation.imagebind.config import HUGE, ImageBindConfig, checkpoint_shapes
from Evaluation.imagebind.model import ImageBindVisionAudio
from Evaluation.imagebind.relevance import ImageBindRelevance, load_model

__all__ = ["HUGE", "ImageBindConfig", "ImageBindRelevance", "ImageBindVisionAudio",
           "checkpoint_shapes", "load_model"]
