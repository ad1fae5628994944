# The archleak app image: Flower's official SuperExec image at the project's flwr version, plus this package
# (ServerApp, ClientApp, the interceptor proxy and the attack). One image serves the ServerApp/ClientApp
# executors, the interceptor and the gallery; the SuperLink and SuperNodes use Flower's own images.
ARG FLWR_VERSION=1.42.0
FROM flwr/superexec:${FLWR_VERSION}

WORKDIR /app
# CPU wheels keep the image small; on a GPU host use the default index instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python -m pip install --no-cache-dir --index-url ${TORCH_INDEX} "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app app ./app
COPY --chown=app:app fednas ./fednas
COPY --chown=app:app attacker ./attacker
COPY --chown=app:app defenses ./defenses
COPY --chown=app:app simulations ./simulations
RUN python -m pip install --no-cache-dir -e .

ENV ARCHLEAK_HOME=/data \
    FEDNAS_DATA_ROOT=/data/datasets \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
ENTRYPOINT ["flower-superexec"]
