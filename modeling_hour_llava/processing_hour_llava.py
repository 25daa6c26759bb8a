"""HourLlavaProcessor: chat messages with videos and images -> Hour-LLaVA inputs, in one call.

    processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt")

renders the chat template (`chat_template.jinja`, saved and loaded with the processor; the default is the
reference's Qwen ChatML prompt with its system prompt and the media tag first in a single-media message), decodes
each video at 1 fps, expands every `<video>` into exactly as many placeholders as the model writes there
(`num_video_tokens`, from the model config's token geometry) followed by the time instruction, and adds
`memaug_query_mask`, the text tokens MemAug reads, for the `training` or `all` policy. The turn markers that policy,
`end_of_turn_token_ids` and the training labels (`assistant_label_mask`) need are read from the chat template and
the tokenizer (`TurnFormat`), so a checkpoint with another decoder's chat format works as well as ChatML.

No call leaves state on the processor: one instance serves several threads.
"""

import functools
import math
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from transformers.processing_utils import ImagesKwargs, MultiModalData, ProcessingKwargs, ProcessorMixin

from .anyres_hour_llava import anyres_tiles, anyres_token_count
from .configuration_hour_llava import HourLlavaConfig
from .errors_hour_llava import HourLlavaErrors, HourLlavaInputError, VideoDecodeError
from .frames_hour_llava import check_duration, check_frame_count
from .memory_hour_llava import QUERY_POLICIES, memaug_query_mask, num_image_tokens, num_video_tokens
from .video_processing_hour_llava import HourLlavaVideoProcessorKwargs, flatten_video_inputs, video_path

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
# Also taken from the config: the vision tower's width, which pre-extracted feature files must have.
FEATURE_WIDTH = "feature_width"
PAD_BACKGROUND = (127, 127, 127)  # the reference's expand2square colour, int(0.5 * 255)
CHAT_TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_template.jinja")
IMAGE_LAYOUTS = ("anyres", "pad")
# The reason of the VideoDecodeError for a feature file extracted by another model (another tower width).
FOREIGN_FEATURES_REASON = "feature file of another model"
# Text that the chat template never writes, to find where a turn's content sits in a rendered probe.
PROBE_QUESTION, PROBE_ANSWER = "HOURLLAVAPROBEQUESTION", "HOURLLAVAPROBEANSWER"


def default_chat_template() -> str:
    """The reference's prompt, `chat_template.jinja` next to this file (a checkpoint carries its own copy)."""
    try:
        with open(CHAT_TEMPLATE_FILE, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        raise HourLlavaInputError(
            f"no chat template given and {CHAT_TEMPLATE_FILE} is missing; load the processor with from_pretrained "
            "(which reads the checkpoint's chat_template.jinja) or pass chat_template="
        ) from error


@functools.lru_cache(maxsize=1)
def default_geometry() -> dict:
    """The token geometry of a default `HourLlavaConfig` (for a processor built without a model config)."""
    return geometry_from_config(HourLlavaConfig())


def geometry_from_config(config) -> dict:
    """The fields of a model config (an `HourLlavaConfig`) that fix token counts, and the vision tower's width."""
    geometry = {name: getattr(config, name) for name in GEOMETRY_FIELDS}
    geometry[FEATURE_WIDTH] = config.vision_config.hidden_size
    return geometry


class HourLlavaImagesKwargs(ImagesKwargs, total=False):
    image_layouts: list[str]


class HourLlavaProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: HourLlavaImagesKwargs
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
    from .frames_hour_llava import frames_to_uint8

    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise HourLlavaInputError(f"an image of shape {array.shape}; expected (H, W, C) or (C, H, W)")
    frame = frames_to_uint8(torch.from_numpy(np.ascontiguousarray(array))[None], "image")[0]
    return Image.fromarray(frame.permute(1, 2, 0).numpy())


@dataclass(frozen=True)
class TurnFormat:
    """How the chat template marks turns, found by rendering probe conversations and tokenizing them.

    header: the ids that open an assistant turn, without trailing whitespace (`<|im_start|>assistant` in ChatML).
    end: the id that closes a turn (`<|im_end|>`), or None when the template writes no special token there.
    trailer: the ids after `end` that still belong to the turn (ChatML's newline).
    markers: the special ids the template writes around turns, plus the newline id when turns contain one: what the
        reference always trains on, so the `training` query policy leaves them out ("\\n", <|im_start|>, <|im_end|>).
    answer_prefix: the ids the template writes between the header and the answer (ChatML's newline): part of the
        header, not of the answer that training supervises.
    """

    header: tuple[int, ...]
    end: int | None
    trailer: tuple[int, ...]
    markers: tuple[int, ...]
    answer_prefix: tuple[int, ...] = ()


class AssistantTurn(NamedTuple):
    """Where one assistant turn lies in a row of token ids (indices into the row).

    start: its header's first token. answer: the answer's first token (after the header and `answer_prefix`).
    answer_stop: one past its end-of-turn token (the row's length when the row ends before one). stop: one past
    the turn's trailer."""

    start: int
    answer: int
    answer_stop: int
    stop: int


def probe_turn_format(render, tokenizer) -> TurnFormat:
    """Find the assistant header, the end-of-turn token and the turn markers of a chat template.

    render(messages, add_generation_prompt) -> str renders the template.
    """
    user = [{"role": "user", "content": [{"type": "text", "text": PROBE_QUESTION}]}]
    answer = [{"role": "assistant", "content": [{"type": "text", "text": PROBE_ANSWER}]}]
    prompt, opened = render(user, False), render(user, True)
    if not opened.startswith(prompt) or opened == prompt:
        raise HourLlavaInputError(
            "the chat template writes no assistant header for add_generation_prompt=True, so the turn markers the "
            "'training' MemAug query policy leaves out cannot be found; use a template that does, or "
            "memaug_query_policy='all'"
        )
    header_text = opened[len(prompt) :]
    conversation = render(user + answer, False)
    after = conversation.split(PROBE_ANSWER, 1)[1] if PROBE_ANSWER in conversation else ""

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    media = {tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<video>") if t in tokenizer.get_vocab()}
    special -= media
    header, trailer_ids = encode(header_text.rstrip()), encode(after)
    end = next((i for i in trailer_ids if i in special), None)
    trailer = tuple(trailer_ids[trailer_ids.index(end) + 1 :]) if end is not None else ()
    markers = {i for i in encode(header_text) + trailer_ids if i in special}
    newline = encode("\n")
    if len(newline) == 1 and ("\n" in header_text or "\n" in after):
        markers.add(newline[0])
    before = conversation.split(PROBE_ANSWER, 1)[0] if PROBE_ANSWER in conversation else ""
    opening = header_text.rstrip()
    prefix = encode(before[before.rindex(opening) + len(opening) :]) if opening and opening in before else []
    return TurnFormat(tuple(header), end, trailer, tuple(sorted(markers)), tuple(prefix))


class HourLlavaProcessor(HourLlavaErrors, ProcessorMixin):
    r"""Tokenizer + image processor + video processor + chat template of Hour-LLaVA.

    token_geometry (`dict`): the model-config fields that fix token counts (`GEOMETRY_FIELDS`) and the tower's
        width; build it with `HourLlavaProcessor.geometry_from_config(model.config)`. `from_pretrained` takes it from
        the checkpoint's `config.json` when there is one, so placeholders always match the model; fields missing here
        come from a default `HourLlavaConfig`.
    memaug_query_policy (`"training"` | `"all"`): which text tokens `memaug_query_mask` marks (see
        `memory_hour_llava.memaug_query_mask`); `__call__` takes a per-call override.
    add_time_instruction (`bool`, True): put the reference's "The video lasts for ..." sentence after each video.
    chat_template: the Jinja template (default: `chat_template.jinja`, the reference's ChatML prompt). Any template
        that writes `<video>` / `<image>` tags, an assistant header for `add_generation_prompt` and a special
        end-of-turn token works: its turn markers are read from it and the tokenizer (`turn_format`), and training
        labels follow from them (`assistant_label_mask`). `{% generation %}` blocks are needed only for
        `return_assistant_tokens_mask=True`.

    Errors are `HourLlavaError`s, also reachable as `processor.VideoDecodeError` / `processor.HourLlavaInputError`.
    """

    valid_processor_kwargs = HourLlavaProcessorKwargs
    unused_input_names = ["video_durations", "image_num_tokens"]

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
            raise HourLlavaInputError(f"memaug_query_policy={memaug_query_policy!r}; expected one of {QUERY_POLICIES}")
        self.image_token = image_token
        self.video_token = video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        self.token_geometry = {**default_geometry(), **(token_geometry or {})}
        self.memaug_query_policy = memaug_query_policy
        self.add_time_instruction = add_time_instruction
        self.time_instruction = time_instruction
        super().__init__(
            image_processor, tokenizer, video_processor, chat_template=chat_template or default_chat_template()
        )

    geometry_from_config = staticmethod(geometry_from_config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `ProcessorMixin.from_pretrained` (the chat template from `chat_template.jinja`); the token geometry
        comes from the folder's model `config.json` when it has one."""
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
        try:
            config = HourLlavaConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        except (OSError, ValueError, TypeError):
            return processor  # a processor-only folder: the geometry it saved
        processor.token_geometry = {**processor.token_geometry, **geometry_from_config(config)}
        return processor

    @property
    def geometry(self) -> SimpleNamespace:
        return SimpleNamespace(**self.token_geometry)

    # -------------------------------------------------------------------------------------------------------------
    # Turn format, read from the chat template and the tokenizer
    # -------------------------------------------------------------------------------------------------------------
    @property
    def turn_format(self) -> TurnFormat:
        template = self.chat_template if isinstance(self.chat_template, str) else self._resolve_chat_template(None)
        return _turn_format_of(self, template)

    def end_of_turn_token_ids(self, generation_config=None) -> list[int]:
        """Ids that end the assistant's turn: the template's end-of-turn token, the tokenizer's eos and the
        generation config's eos. Pass them as `generate(..., eos_token_id=...)`."""
        return _end_ids([self.turn_format.end], self.tokenizer, generation_config)

    # -------------------------------------------------------------------------------------------------------------
    # Placeholder counts
    # -------------------------------------------------------------------------------------------------------------
    def video_replacement(self, num_frames: int, duration: float) -> str:
        """What one `<video>` tag becomes: a placeholder per decoder token, then the time instruction."""
        text = self.video_token * num_video_tokens(num_frames, self.geometry)
        if self.add_time_instruction:
            text += "\n" + self.time_instruction.format(duration=duration, num_frames=num_frames)
        return text

    def image_token_count(self, height: int, width: int, layout: str) -> int:
        """`<image>` placeholders of one image of (height, width): anyres (alone in its sample) or padded."""
        geometry = self.geometry
        if layout == "pad":
            return num_image_tokens(geometry)
        return anyres_token_count(
            (height, width),
            geometry.image_grid_pinpoints,
            self.image_processor.size["height"],
            geometry.vision_grid_size,
            geometry.spatial_keep_ratio,
            geometry.spatial_forgetting_mode,
            int(geometry.image_aspect_ratio.removeprefix("anyres_max_")),
        )

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, image_layout: str | None = None, **kwargs):
        """Placeholders the processor writes, for serving stacks that budget tokens before processing.

        image_sizes: [(height, width)] of images; each is counted as alone in its sample (anyres when the geometry
        says so) unless `image_layout="pad"` (several images in one sample). video_sizes: [(num_frames, height,
        width)] with num_frames the sampled frame count (1 per second of video, at least `min_frames`).
        Returns `MultiModalData(num_image_tokens, num_image_patches, num_video_tokens)`.
        """
        data = {}
        if image_sizes is not None:
            layout = image_layout or self._default_image_layout()
            data["num_image_tokens"] = [self.image_token_count(int(h), int(w), layout) for h, w in image_sizes]
            data["num_image_patches"] = [self._num_tiles(int(h), int(w), layout) for h, w in image_sizes]
        if video_sizes is not None:
            data["num_video_tokens"] = [
                num_video_tokens(check_frame_count(int(size[0]), "video_sizes num_frames"), self.geometry)
                for size in video_sizes
            ]
        return MultiModalData(**data)

    def _default_image_layout(self) -> str:
        return "anyres" if self.geometry.image_aspect_ratio.startswith("anyres") else "pad"

    def _num_tiles(self, height: int, width: int, layout: str) -> int:
        if layout == "pad":
            return 1
        blank = Image.new("RGB", (width, height))
        return len(anyres_tiles(blank, self.geometry.image_grid_pinpoints, self.image_processor.size["height"]))

    # -------------------------------------------------------------------------------------------------------------
    # ProcessorMixin.__call__ and its hooks
    # -------------------------------------------------------------------------------------------------------------
    def __call__(
        self, images=None, text=None, videos=None, audio=None, memaug_query_policy: str | None = None, **kwargs
    ):
        """Tokenize `text` (with `<image>` / `<video>` tags), process images and videos, expand the tags, and add
        `memaug_query_mask` (B, L) for `memaug_query_policy` (default: the processor's).

        Everything that can be checked without reading media is checked first: options, the media each sample
        holds (one video, or images, per sample), tag counts.
        """
        policy = memaug_query_policy or self.memaug_query_policy
        if policy not in QUERY_POLICIES:
            raise HourLlavaInputError(f"memaug_query_policy={policy!r}; expected one of {QUERY_POLICIES}")
        self._check_kwargs(kwargs)
        self._check_media_per_sample(text, images, videos)
        if images is not None:
            images, layouts = self._image_layouts_for(self.image_processor.fetch_images(images), text)
            kwargs["image_layouts"] = layouts
        outputs = super().__call__(images=images, text=text, videos=videos, **kwargs)
        if "input_ids" in outputs:
            outputs["memaug_query_mask"] = self.memaug_query_mask(
                outputs["input_ids"], outputs.get("attention_mask"), policy
            )
        return outputs

    def _check_kwargs(self, kwargs: dict) -> None:
        """Every option is used by some part (tokenizer, image or video processor) or refused, never ignored."""
        valid = set(HourLlavaProcessorKwargs.__annotations__) | {"common_kwargs"}
        for modality, part in (
            ("text_kwargs", self.tokenizer),
            ("images_kwargs", self.image_processor),
            ("videos_kwargs", self.video_processor),
            ("audio_kwargs", None),
        ):
            valid |= set(HourLlavaProcessorKwargs.__annotations__[modality].__annotations__)
            valid |= set(getattr(getattr(part, "valid_kwargs", None), "__annotations__", {}))
        if self.video_processor is not None:
            valid |= self.video_processor.valid_options()
        unknown = sorted(set(kwargs) - valid - {"image_layouts"})
        if unknown:
            raise HourLlavaInputError(
                f"unknown processor option(s) {unknown}: not used by the tokenizer, the image processor or the video "
                f"processor (video options: {sorted(self.video_processor.valid_options())})"
            )
        if self.video_processor is not None:
            video_options = {k: v for k, v in kwargs.items() if k in self.video_processor.valid_options()}
            video_options.update(kwargs.get("videos_kwargs") or {})
            self.video_processor.check_options(video_options)

    def _check_media_per_sample(self, text, images, videos) -> None:
        """Hour-LLaVA takes, per sample, one video or images (not both, not two videos): refuse other mixes from
        the tags in the text, before any image or video is read."""
        if text is None:
            if images is not None and videos is not None:
                raise HourLlavaInputError("images and videos without text; give text with <image> / <video> tags")
            return
        for sample, prompt in enumerate([text] if isinstance(text, str) else list(text)):
            if not isinstance(prompt, str):
                raise HourLlavaInputError(f"text[{sample}] is {type(prompt).__name__}; expected a string")
            num_videos, num_images = prompt.count(self.video_token), prompt.count(self.image_token)
            if num_videos and num_images:
                raise HourLlavaInputError(
                    f"sample {sample} holds {num_videos} video(s) and {num_images} image(s); Hour-LLaVA takes a video "
                    "or images per sample, not both: split them into separate samples"
                )
            if num_videos > 1:
                raise HourLlavaInputError(
                    f"sample {sample} holds {num_videos} videos; Hour-LLaVA takes one video per sample (its memory "
                    "repository is one video's): split them into separate samples or join the videos"
                )

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
        anyres = self._default_image_layout() == "anyres"
        layouts = ["anyres" if anyres and len(group) == 1 else "pad" for group in groups for _ in group]
        return [image for group in groups for image in group], layouts

    def _process_images(self, images, image_layouts: list[str] | None = None, **kwargs):
        """Each image becomes one padded square (several images in a sample, or `image_aspect_ratio="pad"`) or, alone
        in its sample, anyres tiles: a 384 px base and the tiles of its best grid (reference Sec. 1.3)."""
        layouts = image_layouts or ["pad"] * len(images)
        if len(layouts) != len(images) or any(layout not in IMAGE_LAYOUTS for layout in layouts):
            raise HourLlavaInputError(f"image_layouts={layouts!r}; expected one of {IMAGE_LAYOUTS} per image")
        tile = self.image_processor.size["height"]
        tiles, counts, sizes, tokens = [], [], [], []
        for image, layout in zip(images, layouts, strict=True):
            image = as_pil_image(image)
            if layout == "anyres":
                pieces = anyres_tiles(image, self.geometry.image_grid_pinpoints, tile)
            else:
                pieces = [pad_to_square(image)]
            tiles += pieces
            counts.append(len(pieces))
            sizes.append([image.height, image.width])
            tokens.append(self.image_token_count(image.height, image.width, layout))
        processed = self.image_processor(tiles, **kwargs)
        processed["image_num_tiles"] = torch.tensor(counts)
        processed["image_sizes"] = torch.tensor(sizes)
        processed["image_num_tokens"] = tokens
        replacements = [self.replace_image_token(processed, i) for i in range(len(images))]
        return processed, replacements

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * int(image_inputs["image_num_tokens"][image_idx])

    def _process_videos(self, videos, **kwargs):
        """The video processor's outputs and each video's replacement; feature files are checked against the
        model's tower width (from the config) here, where their paths are known."""
        processed, replacements = super()._process_videos(videos, **kwargs)
        width = self.token_geometry.get(FEATURE_WIDTH)
        if "video_features" in processed and width is not None:
            self._check_feature_files(flatten_video_inputs(videos), processed, width)
        return processed, replacements

    @staticmethod
    def _check_feature_files(videos: list, processed, width: int) -> None:
        """Each feature file's features must be this model's: the tower's width and a square patch grid. Refused
        as a `VideoDecodeError` naming the file, with the reason `FOREIGN_FEATURES_REASON`. (Non-finite values are
        refused by the model.)"""
        counts = [int(n) for n in processed["video_num_frames"]]
        flags = processed.get("video_is_features")
        flags = [True] * len(counts) if flags is None else [bool(f) for f in flags]
        start = 0
        for video, count, is_features in zip(videos, counts, flags, strict=True):
            if not is_features:
                continue
            features = processed["video_features"][start : start + count]
            start += count
            side = math.isqrt(features.shape[1])
            if features.shape[-1] != width or side * side != features.shape[1]:
                raise VideoDecodeError(
                    video_path(video) or "video_features",
                    f"{FOREIGN_FEATURES_REASON}: features of width {features.shape[-1]} with {features.shape[1]} "
                    f"tokens per frame, but this model's vision tower gives width {width} (vision_config.hidden_size) "
                    "on a square patch grid; extract the features with this model",
                )

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
        frames = [check_frame_count(n, f"video_num_frames[{i}]") for i, n in enumerate(video_num_frames)]
        seconds = [check_duration(d, f"video_durations[{i}]") for i, d in enumerate(video_durations)]
        if len(frames) != len(seconds):
            raise HourLlavaInputError(f"{len(frames)} video_num_frames but {len(seconds)} video_durations")
        self._check_media_per_sample(texts, None, None)
        tags = sum(sample.count(self.video_token) for sample in texts)
        if tags != len(frames):
            raise HourLlavaInputError(f"the text holds {tags} {self.video_token} tag(s) for {len(frames)} video(s)")
        replacements = iter(zip(frames, seconds, strict=True))
        expanded = []
        for sample in texts:
            pieces = sample.split(self.video_token)
            out = pieces[0]
            for piece in pieces[1:]:
                num_frames, duration = next(replacements)
                out += self.video_replacement(num_frames, duration) + piece
            expanded.append(out)
        outputs = self.tokenizer(expanded, **tokenizer_kwargs)
        outputs["memaug_query_mask"] = self.memaug_query_mask(
            outputs["input_ids"], outputs.get("attention_mask"), memaug_query_policy
        )
        return outputs

    # -------------------------------------------------------------------------------------------------------------
    # MemAug query mask
    # -------------------------------------------------------------------------------------------------------------
    def assistant_turns(self, ids: list[int]) -> list[AssistantTurn]:
        """The assistant turns of one row of token ids, found by the markers of `turn_format`: each header, the
        answer after it through the next end-of-turn token, and the trailer after that. A header with no end-of-turn
        token after it (a trailing generation prompt, a cut-off row) runs to the end of the row."""
        turn = self.turn_format
        header, width, prefix = list(turn.header), len(turn.header), list(turn.answer_prefix)
        turns, position = [], 0
        while width and header[0] in ids[position:]:
            position = ids.index(header[0], position)
            if ids[position : position + width] != header:
                position += 1
                continue
            answer = position + width
            if prefix and ids[answer : answer + len(prefix)] == prefix:
                answer += len(prefix)
            end = ids.index(turn.end, position + width) if turn.end in ids[position + width :] else None
            if end is None:
                turns.append(AssistantTurn(position, min(answer, len(ids)), len(ids), len(ids)))
                break
            trailer = len(turn.trailer) if tuple(ids[end + 1 : end + 1 + len(turn.trailer)]) == turn.trailer else 0
            turns.append(AssistantTurn(position, min(answer, end), end + 1, end + 1 + trailer))
            position = end + 1 + trailer
        return turns

    def _turn_span_mask(self, input_ids: torch.Tensor, span) -> torch.Tensor:
        """(B, L) bool: True over `span(turn) -> (first, stop)` of every assistant turn in each row of `input_ids`."""
        rows = []
        for ids in input_ids.tolist():
            row = [False] * len(ids)
            for found in self.assistant_turns(ids):
                first, stop = span(found)
                row[first:stop] = [True] * (stop - first)
            rows.append(row)
        return torch.tensor(rows, dtype=torch.bool).view(input_ids.shape)

    def assistant_turn_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: every token of an assistant turn, from its header (`<|im_start|>assistant` in ChatML)
        through its end-of-turn token and the trailer after it (ChatML's newline); a trailing generation prompt
        counts as an assistant turn. The markers come from `turn_format`."""
        return self._turn_span_mask(input_ids, lambda found: (found.start, found.stop))

    def assistant_label_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) bool: the tokens training supervises, found from the token ids alone: each assistant answer and
        its end-of-turn token (`red<|im_end|>` in ChatML). Not supervised: the turn header and the ids between it and
        the answer (`<|im_start|>assistant\\n`), the trailer after the end-of-turn token (ChatML's newline), the
        system prompt, user turns, `<image>` / `<video>` placeholders and padding (`attention_mask` 0).

        Labels are `input_ids.masked_fill(~mask, -100)`. For the default template this is what
        `apply_chat_template(..., return_assistant_tokens_mask=True)` marks from its `{% generation %}` blocks (tested
        on transformers 5.23), without depending on that mechanism, whose mask is all zeros once `<video>` tags are
        expanded on transformers 5.17. Unlike the reference (which also trains on the header, the trailer and every
        "\\n", <|im_start|> and <|im_end|>), only the answers and their end tokens are targets."""
        turn = self.turn_format
        if turn.end is None:
            raise HourLlavaInputError(
                "the chat template ends assistant turns with no special token, so the answers cannot be found in the "
                "token ids for training labels; use a template that closes each turn with a special token "
                "(as ChatML's <|im_end|>)"
            )
        mask = self._turn_span_mask(input_ids, lambda found: (found.answer, found.answer_stop))
        mask &= ~torch.isin(input_ids, torch.tensor([self.image_token_id, self.video_token_id]))
        if attention_mask is not None:
            mask &= attention_mask.bool()
        return mask

    def memaug_query_mask(self, input_ids, attention_mask=None, policy: str | None = None):
        """Which text tokens join MemAug's query, for `policy` (`training` or `all`)."""
        as_lists = not torch.is_tensor(input_ids)
        ids = torch.as_tensor(input_ids)
        mask_in = torch.as_tensor(attention_mask) if attention_mask is not None else None
        policy = policy or self.memaug_query_policy
        training = policy == "training"  # only this policy needs the turn markers
        mask = memaug_query_mask(
            ids,
            policy,
            [self.image_token_id, self.video_token_id],
            attention_mask=mask_in,
            assistant_mask=self.assistant_turn_mask(ids) if training else None,
            excluded_token_ids=list(self.turn_format.markers) if training else None,
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


def _turn_format_of(processor: HourLlavaProcessor, template: str) -> TurnFormat:
    """The processor's turn format, probed once per (tokenizer, template) and cached on the processor (a cache,
    not per-call state: every call reads the same value)."""

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        return processor.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    cache = processor.__dict__.setdefault("_turn_format_cache", {})
    key = (id(processor.tokenizer), template)
    if key not in cache:
        cache[key] = probe_turn_format(render, processor.tokenizer)
    return cache[key]


def _end_ids(candidates: list[int | None], tokenizer, generation_config) -> list[int]:
    ids = list(candidates) + [tokenizer.eos_token_id]
    configured = getattr(generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


def end_of_turn_token_ids(tokenizer_or_processor, generation_config=None) -> list[int]:
    """Token ids that end the assistant's turn: the chat template's end-of-turn token (read from the processor's or
    the tokenizer's chat template: `<|im_end|>` in ChatML), the tokenizer's eos and the generation config's eos (an
    int or a list), deduplicated. Pass them as `generate(..., eos_token_id=...)`: a checkpoint whose generation config
    names no eos would otherwise write past the end of its answer, and decoding with `skip_special_tokens=True` glues
    that text onto the answer ("green" + "<|im_end|>" + "reen" -> "greenreen")."""
    if isinstance(tokenizer_or_processor, HourLlavaProcessor):
        return tokenizer_or_processor.end_of_turn_token_ids(generation_config)
    tokenizer = tokenizer_or_processor
    end = None
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):

        def render(messages, add_generation_prompt):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

        try:
            end = probe_turn_format(render, tokenizer).end
        except Exception:  # a template that cannot render the probe: fall back to the eos ids
            end = None
    return _end_ids([end], tokenizer, generation_config)


__all__ = [
    "FOREIGN_FEATURES_REASON",
    "GEOMETRY_FIELDS",
    "HourLlavaProcessor",
    "AssistantTurn",
    "TIME_INSTRUCTION",
    "TurnFormat",
    "default_chat_template",
    "end_of_turn_token_ids",
    "geometry_from_config",
    "pad_to_square",
    "probe_turn_format",
]
