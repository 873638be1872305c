# The operator image: the kubetune package without torch (the trainer has its own image, trainer_image/).
# BASE is any image with Python 3.11 and its venv module: the public python:3.11-slim by default; CI builds
# from a Debian base made with debootstrap (hack/build-operator-image.sh), since no registry is reachable.
ARG BASE=python:3.11-slim
FROM ${BASE}
# Where the build machine keeps its CA bundle, when its network needs one (an egress proxy); used by pip
# during the build only, not kept in the image.
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A venv works the same on both bases (Debian's own Python refuses system-wide pip installs).
RUN python3 -m venv /opt/kubetune \
 && /opt/kubetune/bin/pip install --no-cache-dir . \
 && rm -rf /src
ENV PATH=/opt/kubetune/bin:$PATH
WORKDIR /
# Any non-root uid works; the chart sets runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["kubetune"]
CMD ["run-operator", "--liveness", "http://0.0.0.0:8080/healthz"]
