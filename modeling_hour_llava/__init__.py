"""Hour-LLaVA for the Hugging Face stack.

The files of this folder are copied into every checkpoint (`save_pretrained` follows their single-dot imports), so a
checkpoint loads with `trust_remote_code=True` where this package is not installed. Importing the package also
registers the classes with the Auto factories, so `trust_remote_code` is not needed where it is installed.

Every input Hour-LLaVA refuses raises an `HourLlavaError` (a `ValueError`): `VideoDecodeError` for a file,
`HourLlavaInputError` for anything else. They are the same classes in every copy of the code (this package and each
checkpoint's remote code), so `except modeling_hour_llava.VideoDecodeError` catches what a processor loaded with
`trust_remote_code=True` raises; loaded objects expose them too (`processor.VideoDecodeError`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoVideoProcessor,
)

from .configuration_hour_llava import HourLlavaConfig
from .errors_hour_llava import HourLlavaError, HourLlavaInputError, VideoDecodeError
from .memory_hour_llava import num_image_tokens, num_video_tokens, video_token_budget
from .modeling_hour_llava import (
    AUTO_MAP,
    HourLlavaForConditionalGeneration,
    HourLlavaModel,
    HourLlavaPreTrainedModel,
    HourLlavaVideoMemory,
)
from .processing_hour_llava import HourLlavaProcessor, end_of_turn_token_ids
from .video_loading_hour_llava import decode_frames, probe_video, sample_frame_indices
from .video_processing_hour_llava import HourLlavaVideoProcessor


def register_auto_classes() -> None:
    """Make `Auto*.from_pretrained` / `save_pretrained` know Hour-LLaVA (idempotent)."""
    HourLlavaConfig.register_for_auto_class()
    HourLlavaModel.register_for_auto_class("AutoModel")
    HourLlavaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    HourLlavaProcessor.register_for_auto_class("AutoProcessor")
    HourLlavaVideoProcessor.register_for_auto_class("AutoVideoProcessor")
    for factory, cls in (
        (AutoModel, HourLlavaModel),
        (AutoModelForCausalLM, HourLlavaForConditionalGeneration),
        (AutoModelForImageTextToText, HourLlavaForConditionalGeneration),
    ):
        try:
            factory.register(HourLlavaConfig, cls, exist_ok=True)
        except ValueError:
            pass
    try:
        AutoConfig.register(HourLlavaConfig.model_type, HourLlavaConfig, exist_ok=True)
        AutoProcessor.register(HourLlavaConfig, HourLlavaProcessor, exist_ok=True)
        AutoVideoProcessor.register(HourLlavaConfig, HourLlavaVideoProcessor, exist_ok=True)
    except (ValueError, TypeError):
        pass


register_auto_classes()

__all__ = [
    "AUTO_MAP",
    "HourLlavaConfig",
    "HourLlavaError",
    "HourLlavaForConditionalGeneration",
    "HourLlavaInputError",
    "HourLlavaModel",
    "HourLlavaPreTrainedModel",
    "HourLlavaProcessor",
    "HourLlavaVideoMemory",
    "HourLlavaVideoProcessor",
    "VideoDecodeError",
    "decode_frames",
    "end_of_turn_token_ids",
    "probe_video",
    "sample_frame_indices",
    "num_image_tokens",
    "num_video_tokens",
    "register_auto_classes",
    "video_token_budget",
]
