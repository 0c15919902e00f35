"""The parts of `benchmarks/bench_quant_speed.py`: the derived GGUF files (`gguf_files`), the
configurations and their runners (`runners`), and the output (`report`)."""
