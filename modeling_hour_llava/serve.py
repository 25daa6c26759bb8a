"""Serve an Hour-LLaVA checkpoint over the OpenAI chat-completions API: `transformers serve`, made to load it.

    python -m modeling_hour_llava.serve CHECKPOINT [--port 8000] [any `transformers serve` option]

`transformers serve --trust-remote-code` (transformers 5.23) cannot serve a remote-code model: it loads a model that
is not a multimodal-LM of the library by `getattr(transformers, config.architectures[0])`, which fails with
`AttributeError: module transformers has no attribute HourLlavaForConditionalGeneration` (`tests/test_serve.py`
shows it), and past that it refuses the model with "Unknown modality" (seen by patching the loader alone). This
module runs that same server (FastAPI + uvicorn, the same endpoints, streaming, OpenAI-compatible requests and
answers) with its model manager taught two things: a checkpoint whose architecture transformers does not have loads
through `AutoModelForImageTextToText` (remote code trusted, since that is what the checkpoint is), and Hour-LLaVA is
a vision-language model. It also makes
videos follow Hour-LLaVA's rule: `transformers serve` asks every processor for `num_frames=32`, which the video
processor refuses (a fixed count would drop most of an hour), so the server's default chat-template kwargs set
`num_frames` to None and each `video_url` (a local path or a `file://` URL) is read whole, at 1 frame per second.
An input Hour-LLaVA refuses (a broken video, a bad option) is answered with 400 and the reason, not a bare 500.
"""

import json
import sys

HOUR_LLAVA_ARCHITECTURES = ("HourLlavaForConditionalGeneration",)
DEFAULT_CHAT_TEMPLATE_KWARGS = {"num_frames": None}


def hour_llava_model_manager():
    """transformers' serving `ModelManager`, able to load remote-code vision-language checkpoints."""
    import transformers
    from transformers.cli.serving import model_manager

    base = model_manager.ModelManager
    if getattr(base, "serves_remote_code", False):
        return base

    class HourLlavaModelManager(base):
        serves_remote_code = True

        def _load_model(self, model_id_and_revision, tqdm_class=None, progress_callback=None, gguf_file=None):
            from transformers import AutoConfig, AutoModelForImageTextToText

            model_id, revision = model_id_and_revision.split("@", 1)
            config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=True)
            if gguf_file is not None or hasattr(transformers, (config.architectures or [""])[0]):
                return super()._load_model(model_id_and_revision, tqdm_class, progress_callback, gguf_file)
            return AutoModelForImageTextToText.from_pretrained(
                model_id,
                revision=revision,
                trust_remote_code=True,
                dtype=self.dtype,
                device_map=self.device,
                attn_implementation=self.attn_implementation,
            )

        @staticmethod
        def get_model_modality(model, processor=None):
            if type(model).__name__ in HOUR_LLAVA_ARCHITECTURES:
                return model_manager.Modality.VLM
            return base.get_model_modality(model, processor=processor)

    return HourLlavaModelManager


def hour_llava_build_server():
    """transformers' `build_server`, whose app answers an input Hour-LLaVA refuses (an `HourLlavaError`: a broken
    video, a bad option) with 400 and the error's message in OpenAI's error format, instead of a bare 500."""
    from transformers.cli.serving import server

    base = server.build_server
    if getattr(base, "answers_hour_llava_errors", False):
        return base

    def build_server(*args, **kwargs):
        from fastapi.responses import JSONResponse

        from .errors_hour_llava import HourLlavaError

        app = base(*args, **kwargs)

        async def refuse(_request, error: HourLlavaError):
            message = {"message": str(error), "type": "invalid_request_error", "code": type(error).__name__}
            return JSONResponse({"error": message}, status_code=400)

        app.add_exception_handler(HourLlavaError, refuse)
        return app

    build_server.answers_hour_llava_errors = True
    return build_server


def serve_arguments(argv: list[str]) -> list[str]:
    """`transformers serve` arguments: remote code trusted, and `num_frames` left to Hour-LLaVA's 1-fps rule
    unless the caller passes `--chat-template-kwargs` (its `num_frames` wins, and is refused if set)."""
    args = list(argv)
    if "--trust-remote-code" not in args and "--no-trust-remote-code" not in args:
        args.append("--trust-remote-code")
    if not any(a == "--chat-template-kwargs" or a.startswith("--chat-template-kwargs=") for a in args):
        args += ["--chat-template-kwargs", json.dumps(DEFAULT_CHAT_TEMPLATE_KWARGS)]
    return args


def main(argv: list[str] | None = None) -> None:
    from transformers.cli.serving import model_manager, server
    from transformers.cli.transformers import main as transformers_main

    model_manager.ModelManager = hour_llava_model_manager()
    server.build_server = hour_llava_build_server()
    sys.argv = ["transformers", "serve", *serve_arguments(sys.argv[1:] if argv is None else argv)]
    transformers_main()


if __name__ == "__main__":
    main()
