"""Hour-LLaVA on an hour of video (`make demo`): a thin script over `hour_llava_demo.cli` (console script
`hour-llava-demo`); `python demo.py --help` for its options."""

from hour_llava_demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
