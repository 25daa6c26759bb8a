import sys

from hour_llava_training.configs import main

sys.exit(main())
