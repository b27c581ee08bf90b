# The two entry points of the README. Both start with the idempotent bootstrap.
.PHONY: lab test bootstrap

TOPOLOGY ?= lab/topologies/topology-4-home-lab-cloud.yaml

bootstrap:
	@scripts/bootstrap.sh

lab: bootstrap
	uv run wirekube-lab run $(TOPOLOGY)

test: bootstrap
	uv run ruff check .
	uv run pytest
