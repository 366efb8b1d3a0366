# The one image of every stepflow-stream service in docker-compose.yml: the gateway, the
# orchestrator and worker agents, the load balancers and the example component servers.
#
#   docker build -t stepflow-stream .
#   docker run --rm stepflow-stream stepflow-stream --help
#
# The source stays in /app and is installed in editable mode, with /app as the working
# directory, so that `serve-components examples.components.cpu_server:server` finds the
# examples (--app-dir .). The Avro schemas ship inside the package (stepflow_stream/schemas).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY stepflow_stream ./stepflow_stream
COPY examples ./examples
RUN pip install -e ".[examples]"

# A non-root user; it owns only /app itself (not the code), so that a command that keeps local
# state in the working directory (.stepflow/) can create it.
RUN useradd --create-home --uid 10001 --user-group stepflow \
    && chown stepflow:stepflow /app
USER stepflow

CMD ["stepflow-stream", "--help"]
