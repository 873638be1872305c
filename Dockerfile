# The operator image: the kubetune package without torch (the trainer has its own image, trainer_image/).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
# Any non-root uid works; the chart sets runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["kubetune"]
CMD ["run-operator", "--liveness", "http://0.0.0.0:8080/healthz"]
