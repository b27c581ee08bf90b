# The two entry points of the README. Both start with the idempotent bootstrap.
.PHONY: lab test bootstrap

TOPOLOGY ?= lab/topologies/topology-4-home-lab-cloud.yaml

bootstrap:
	@scripts/bootstrap.sh

lab: bootstrap
	uv run wirekube-lab run $(TOPOLOGY)

# The images and the lab's node binaries, side by side (scripts/test-deps.sh).
test: bootstrap
	@scripts/test-deps.sh
	uv run ruff check .
	uv run lint-imports
	uv run pytest

# The service images (and the compose stack's control-plane image) with podman,
# offline, on a Debian base built here: scripts/images.sh. IMAGES_SAVE=DIR also
# writes docker-archives for `ctr -n k8s.io images import`.
.PHONY: images
images: bootstrap
	scripts/images.sh $(if $(IMAGES_SAVE),--save $(IMAGES_SAVE))

# arm64 images on an amd64 host through qemu-user-static (slow; on demand).
.PHONY: images-arm64
images-arm64: bootstrap
	scripts/images.sh --arch arm64 $(if $(IMAGES_SAVE),--save $(IMAGES_SAVE))
