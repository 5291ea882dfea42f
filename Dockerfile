# RLHF Studio image: web app by default; the same image runs the Celery worker
# (`rlhf worker ...`). See docker-compose.yml.

# Both Python stages must use the same interpreter: the venv is copied from one to the other.
ARG PYTHON_IMAGE=python:3.11-slim

# --- front-end packages from npm (the same files `make install` copies) ---------------------------------------
FROM node:20-slim AS static
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
 && mkdir -p static/vendor/swagger-ui \
 && cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js \
 && cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
       static/vendor/swagger-ui/

# --- dependencies only, in /opt/venv -----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Plain pip would pull the CUDA build of torch (several GB). For GPU training workers build with
# e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (match your driver).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
# Why not `pip install .`: a non-editable install puts app/ in site-packages, but the app finds
# templates/, static/, migrations/ and alembic.ini next to the package (Path(__file__).parents).
# So install only the dependencies (listed from pyproject.toml, pinned by constraints.txt) and
# run the code from /app below. This layer is also cached across code changes.
# constraints.txt pins torch==2.13.0, which the installed 2.13.0+cpu satisfies: no reinstall.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt
# The `rlhf` command, as pip would generate it for [project.scripts]; imports app from /app.
RUN printf '#!/opt/venv/bin/python\nimport sys\nfrom app.cli import main\nsys.exit(main())\n' > /opt/venv/bin/rlhf \
 && chmod +x /opt/venv/bin/rlhf

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 rlhf \
 && useradd --uid 10001 --gid rlhf --create-home --shell /usr/sbin/nologin rlhf \
 && mkdir /data && chown rlhf:rlhf /data
# RLHF_DATABASE_URL: a writable default for a single `docker run` (compose sets Postgres).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RLHF_DATA_DIR=/data \
    RLHF_DATABASE_URL=sqlite:////data/rlhf.db
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code is root-owned and read-only to the app user; everything it writes goes to /data.
COPY alembic.ini ./
COPY migrations/ migrations/
COPY templates/ templates/
COPY static/ static/
COPY --from=static /src/static/vendor/ static/vendor/
COPY workers/ workers/
COPY app/ app/
USER rlhf
VOLUME ["/data"]
EXPOSE 8000
# slim has no curl; urlopen raises (exit 1) on refusal or a non-2xx answer. /healthz checks the DB.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Migrations run on every start (a no-op when up to date), then exec so uvicorn gets the signals.
CMD ["sh", "-c", "rlhf db upgrade && exec rlhf serve --host 0.0.0.0 --port 8000"]
