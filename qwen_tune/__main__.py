from qwen_tune.cli import main

main()
