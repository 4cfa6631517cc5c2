# streamproxy: one instance. docker-compose.yml runs it beside PostgreSQL.
FROM python:3.12-slim

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY proxy ./proxy
COPY migrations ./migrations
# The README's install command.
RUN pip install -e .
# An editable install is not compiled, and the streamproxy user cannot write __pycache__ under
# /app: without this, every start compiles every module (slower, and its memory stays as heap).
RUN python -m compileall -q proxy migrations

# A user of its own; the spool (recordings waiting while the database is away) lives in a volume.
RUN useradd --system --home-dir /var/lib/streamproxy streamproxy \
    && mkdir -p /var/lib/streamproxy/spool && chown -R streamproxy /var/lib/streamproxy
USER streamproxy
ENV STREAMPROXY_HOST=0.0.0.0 \
    STREAMPROXY_PORT=8080 \
    STREAMPROXY_SPOOL_DIR=/var/lib/streamproxy/spool
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# serve brings the database to head itself before it listens.
CMD ["streamproxy", "serve"]
