.PHONY: test demo docs lint format

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

docs:
	bash scripts/docs.sh

lint:
	.venv/bin/ruff check sb3_qvpo tests examples benchmarks && .venv/bin/mypy sb3_qvpo

format:
	.venv/bin/ruff format sb3_qvpo tests examples benchmarks && .venv/bin/ruff check --fix sb3_qvpo tests examples benchmarks
