"""The demo of the package: Hour-LLaVA's embedded default model on an hour of video (`hour-llava-demo`, `make demo`).

- `hour_llava_demo.world`: the demo's world, a long video with a needle in it, and its questions and truths;
- `hour_llava_demo.checkpoint`: a loadable folder from the code-free embedded checkpoint (the package's remote code
  written next to its weights);
- `hour_llava_demo.picture`: the picture of where MemAug looked;
- `hour_llava_demo.cli`: the command.
"""
