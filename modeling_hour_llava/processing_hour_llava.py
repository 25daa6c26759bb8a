"""HourLlavaProcessor: chat messages with videos and images -> Hour-LLaVA inputs, in one call.

    processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt")

renders the reference's prompt (Qwen ChatML, system prompt "You are a helpful assistant.", the media tag first in
a single-media message, the time instruction after a video), decodes each video at 1 fps, expands every `<video>`
into exactly as many placeholders as the model writes there (`num_video_tokens`, from the model's token geometry
stored here), and adds `memaug_query_mask`, the text tokens MemAug reads, for the `training` or `all` policy.
Assistant turns are wrapped in `{% generation %}` so `return_assistant_tokens_mask=True` gives assistant-only labels.
"""

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin

from .anyres_hour_llava import anyres_tiles, anyres_token_count
from .configuration_hour_llava import default_image_grid_pinpoints
from .memory_hour_llava import QUERY_POLICIES, memaug_query_mask, num_image_tokens, num_video_tokens
from .video_processing_hour_llava import HourLlavaVideoProcessorKwargs

SYSTEM_PROMPT = "You are a helpful assistant."
TIME_INSTRUCTION = (
    "The video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "
    "Please answer the following questions related to this video."
)
# Fields of the model config that decide how many tokens a video or an image becomes.
GEOMETRY_FIELDS = (
    "memory_pool_size",
    "memory_min_frames",
    "spatial_keep_ratio",
    "spatial_forgetting_mode",
    "temporal_keep_ratio",
    "temporal_min_frames",
    "temporal_max_frames",
    "vision_grid_size",
    "image_aspect_ratio",
    "image_grid_pinpoints",
)
DEFAULT_GEOMETRY = {
    "memory_pool_size": 8,
    "memory_min_frames": 128,
    "spatial_keep_ratio": 0.25,
    "spatial_forgetting_mode": "random",
    "temporal_keep_ratio": 0.25,
    "temporal_min_frames": 32,
    "temporal_max_frames": 512,
    "vision_grid_size": 27,
    "image_aspect_ratio": "anyres_max_9",
    "image_grid_pinpoints": default_image_grid_pinpoints(384),
}
PAD_BACKGROUND = (127, 127, 127)  # the reference's expand2square colour, int(0.5 * 255)

CHAT_TEMPLATE = (
    "{%- set media_types = ['image', 'video'] -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}"
    "{%- set blocks = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set blocks = message['content'] -%}{%- endif -%}"
    "{%- set media = blocks | selectattr('type', 'in', media_types) | list -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- for block in blocks if block['type'] == 'text' -%}{{- block['text'] -}}{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{%- if media | length == 1 -%}"
    "{{- '<' + media[0]['type'] + '>\\n' -}}"
    "{%- for block in blocks if block['type'] == 'text' -%}{{- block['text'] -}}{%- endfor -%}"
    "{%- else -%}"
    "{%- for block in blocks -%}"
    "{%- if block['type'] in media_types -%}{{- '<' + block['type'] + '>\\n' -}}"
    "{%- elif block['type'] == 'text' -%}{{- block['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


class HourLlavaProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: HourLlavaVideoProcessorKwargs
    _defaults = {"text_kwargs": {"padding": False}}


def pad_to_square(image: Image.Image, background: tuple[int, int, int] = PAD_BACKGROUND) -> Image.Image:
    """Centre the image on a square canvas (the reference's `expand2square`)."""
    image = image.convert("RGB")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def as_pil_image(image) -> Image.Image:
    """A PIL image, an (H, W, C) array, or a (C, H, W) tensor (what chat templates load from paths) -> RGB PIL."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array.astype(np.uint8)).convert("RGB")


class HourLlavaProcessor(ProcessorMixin):
    r"""Tokenizer + image processor + video processor + chat template of Hour-LLaVA.

    token_geometry (`dict`): the model-config fields that fix token counts (`GEOMETRY_FIELDS`); build it with
        `HourLlavaProcessor.geometry_from_config(model.config)` so placeholders match the model.
    memaug_query_policy (`"training"` | `"all"`): which text tokens `memaug_query_mask` marks (see
        `memory_hour_llava.memaug_query_mask`); `__call__` takes a per-call override.
    add_time_instruction (`bool`, True): put the reference's "The video lasts for ..." sentence after each video.
    """

    valid_processor_kwargs = HourLlavaProcessorKwargs
    unused_input_names = ["video_durations", "image_num_tokens"]
    _image_layouts: list[str] | None = None  # set for the duration of one __call__

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        video_processor=None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        token_geometry: dict | None = None,
        memaug_query_policy: str = "training",
        add_time_instruction: bool = True,
        time_instruction: str = TIME_INSTRUCTION,
        **kwargs,
    ):
        if memaug_query_policy not in QUERY_POLICIES:
            raise ValueError(f"memaug_query_policy={memaug_query_policy!r}; expected one of {QUERY_POLICIES}")
        self.image_token = image_token
        self.video_token = video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        self.token_geometry = {**DEFAULT_GEOMETRY, **(token_geometry or {})}
        self.memaug_query_policy = memaug_query_policy
        self.add_time_instruction = add_time_instruction
        self.time_instruction = time_instruction
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template or CHAT_TEMPLATE)

    @staticmethod
    def geometry_from_config(config) -> dict:
        """The token geometry of a model config (an `HourLlavaConfig`)."""
        return {name: getattr(config, name) for name in GEOMETRY_FIELDS}

    @property
    def geometry(self) -> SimpleNamespace:
        return SimpleNamespace(**self.token_geometry)

    # -------------------------------------------------------------------------------------------------------------
    # Placeholder expansion (hooks of ProcessorMixin.__call__)
    # -------------------------------------------------------------------------------------------------------------
    def video_replacement(self, num_frames: int, duration: float) -> str:
        """What one `<video>` tag becomes: a placeholder per decoder token, then the time instruction."""
        text = self.video_token * num_video_tokens(num_frames, self.geometry)
        if self.add_time_instruction:
            text += "\n" + self.time_instruction.format(duration=duration, num_frames=num_frames)
        return text

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        num_frames = int(video_inputs["video_num_frames"][video_idx])
        return self.video_replacement(num_frames, float(video_inputs["video_durations"][video_idx]))

    def text_for_encoded_videos(
        self,
        text: str | list[str],
        video_num_frames: list[int],
        video_durations: list[float],
        memaug_query_policy: str | None = None,
        **tokenizer_kwargs,
    ):
        """Tokenize prompts about videos that are already encoded (`model.encode_video`): the `<video>` tags are
        expanded from the frame counts and durations, nothing is decoded. Returns input_ids, attention_mask and
        memaug_query_mask, ready for `generate(..., video_memory=memory)`."""
        texts = [text] if isinstance(text, str) else list(text)
        replacements = iter(zip(video_num_frames, video_durations, strict=True))
        expanded = []
        for sample in texts:
            pieces = sample.split(self.video_token)
            out = pieces[0]
            for piece in pieces[1:]:
                num_frames, duration = next(replacements)
                out += self.video_replacement(int(num_frames), float(duration)) + piece
            expanded.append(out)
        outputs = self.tokenizer(expanded, **tokenizer_kwargs)
        outputs["memaug_query_mask"] = self.memaug_query_mask(
            outputs["input_ids"], outputs.get("attention_mask"), memaug_query_policy
        )
        return outputs

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * int(image_inputs["image_num_tokens"][image_idx])

    def _process_images(self, images, **kwargs):
        """Each image becomes one padded square (several images in a sample, or `image_aspect_ratio="pad"`) or, alone
        in its sample, anyres tiles: a 384 px base and the tiles of its best grid (reference Sec. 1.3)."""
        geometry = self.geometry
        layouts = self._image_layouts or ["pad"] * len(images)
        tile = self.image_processor.size["height"]
        tiles, counts, sizes, tokens = [], [], [], []
        for image, layout in zip(images, layouts, strict=True):
            image = as_pil_image(image)
            if layout == "anyres":
                pieces = anyres_tiles(image, geometry.image_grid_pinpoints, tile)
                count = anyres_token_count(
                    (image.height, image.width),
                    geometry.image_grid_pinpoints,
                    tile,
                    geometry.vision_grid_size,
                    geometry.spatial_keep_ratio,
                    geometry.spatial_forgetting_mode,
                    int(geometry.image_aspect_ratio.removeprefix("anyres_max_")),
                )
            else:
                pieces, count = [pad_to_square(image)], num_image_tokens(geometry)
            tiles += pieces
            counts.append(len(pieces))
            sizes.append([image.height, image.width])
            tokens.append(count)
        processed = self.image_processor(tiles, **kwargs)
        processed["image_num_tiles"] = torch.tensor(counts)
        processed["image_sizes"] = torch.tensor(sizes)
        processed["image_num_tokens"] = tokens
        replacements = [self.replace_image_token(processed, i) for i in range(len(images))]
        return processed, replacements

    def _image_layouts_for(self, images, text) -> tuple[list, list[str]]:
        """Flatten images (nested per sample by chat templates, or flat with `<image>` tags in each text) and say how
        each is processed: anyres when it is its sample's only image, else padded."""
        if images and isinstance(images[0], (list, tuple)):
            groups = [list(group) for group in images]
        else:
            flat = list(images) if isinstance(images, (list, tuple)) else [images]
            texts = [text] if isinstance(text, str) else list(text or [])
            counts = [sample.count(self.image_token) for sample in texts] or [len(flat)]
            groups, cursor = [], 0
            for count in counts:
                groups.append(flat[cursor : cursor + count])
                cursor += count
        anyres = self.geometry.image_aspect_ratio.startswith("anyres")
        layouts = ["anyres" if anyres and len(group) == 1 else "pad" for group in groups for _ in group]
        return [image for group in groups for image in group], layouts

    def __call__(
        self, images=None, text=None, videos=None, audio=None, memaug_query_policy: str | None = None, **kwargs
    ):
        """Tokenize `text` (with `<image>` / `<video>` tags), process images and videos, expand the tags, and add
        `memaug_query_mask` (B, L) for `memaug_query_policy` (default: the processor's)."""
        if images is not None:
            images, self._image_layouts = self._image_layouts_for(self.image_processor.fetch_images(images), text)
        try:
            outputs = super().__call__(images=images, text=text, videos=videos, **kwargs)
        finally:
            self._image_layouts = None
        if "input_ids" in outputs:
            outputs["memaug_query_mask"] = self.memaug_query_mask(
                outputs["input_ids"], outputs.get("attention_mask"), memaug_query_policy or self.memaug_query_policy
            )
        return outputs

    # -------------------------------------------------------------------------------------------------------------
    # MemAug query mask
    # -------------------------------------------------------------------------------------------------------------
    def _single_id(self, text: str) -> int | None:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def assistant_turn_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: every token of an assistant turn, from its `<|im_start|>assistant\\n` header through its
        `<|im_end|>` and the newline after it; a trailing generation prompt counts as an assistant turn."""
        start, end = self._single_id("<|im_start|>"), self._single_id("<|im_end|>")
        header = self.tokenizer.encode("assistant", add_special_tokens=False)
        newline = self._single_id("\n")
        rows = []
        for ids in input_ids.tolist():
            row, inside = [False] * len(ids), False
            for position, token in enumerate(ids):
                if token == start:
                    inside = ids[position + 1 : position + 1 + len(header)] == header
                if inside:
                    row[position] = True
                    if token == end:
                        inside = False
                        if position + 1 < len(ids) and ids[position + 1] == newline:
                            row[position + 1] = True
            rows.append(row)
        mask = torch.tensor(rows, dtype=torch.bool).view(input_ids.shape)
        return mask

    def memaug_query_mask(self, input_ids, attention_mask=None, policy: str | None = None):
        """Which text tokens join MemAug's query, for `policy` (`training` or `all`)."""
        as_lists = not torch.is_tensor(input_ids)
        ids = torch.as_tensor(input_ids)
        mask_in = torch.as_tensor(attention_mask) if attention_mask is not None else None
        excluded = [self._single_id(text) for text in ("\n", "<|im_start|>", "<|im_end|>")]
        mask = memaug_query_mask(
            ids,
            policy or self.memaug_query_policy,
            [self.image_token_id, self.video_token_id],
            attention_mask=mask_in,
            assistant_mask=self.assistant_turn_mask(ids),
            excluded_token_ids=[i for i in excluded if i is not None],
        ).long()
        return mask.tolist() if as_lists else mask

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        names = list(self.tokenizer.model_input_names) + ["memaug_query_mask"]
        names += ["pixel_values", "image_sizes", "image_num_tiles"] if self.image_processor is not None else []
        names += self.video_processor.model_input_names if self.video_processor is not None else []
        return list(dict.fromkeys(names))


def end_of_turn_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Token ids that end the assistant's turn: the chat template's `<|im_end|>`, the tokenizer's eos and the
    generation config's eos (an int or a list), deduplicated. Pass them as `generate(..., eos_token_id=...)`: a
    checkpoint whose generation config names no eos would otherwise write past the end of its answer, and decoding
    with `skip_special_tokens=True` glues that text onto the answer ("green" + "<|im_end|>" + "reen" -> "greenreen")."""
    ids = [tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None]
    ids.append(tokenizer.eos_token_id)
    configured = getattr(generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


__all__ = [
    "CHAT_TEMPLATE",
    "HourLlavaProcessor",
    "SYSTEM_PROMPT",
    "TIME_INSTRUCTION",
    "end_of_turn_token_ids",
    "pad_to_square",
]
