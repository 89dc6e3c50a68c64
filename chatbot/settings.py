"""Settings, all from the environment, with defaults that serve `make run` on one machine.

Every setting is documented in docs/settings.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF

from chatbot.security import proxy_ssl_header_parse, secret_key_load

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# Unset: a random key made once into SECRET_KEY_FILE. With DEBUG off a short or public key refuses
# to start (chatbot/security.py).
SECRET_KEY = secret_key_load(
    configured=os.environ.get("SECRET_KEY"),
    path=Path(env_str("SECRET_KEY_FILE", str(BASE_DIR / "var" / "secret_key"))),
    debug=DEBUG,
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

# Behind the TLS proxy of docs/deployment.md; the defaults serve `make run` on plain http.
SECURE_PROXY_SSL_HEADER = proxy_ssl_header_parse(env_str("SECURE_PROXY_SSL_HEADER", ""))
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# The container's own health check asks over plain http from inside (docker-compose.yml).
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Only our own origin, no inline script or style: every page's code lives in static/.
# connect-src 'self' covers the same-origin ws:/wss: sockets (CSP level 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    "conversations",
    "finetuning",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatbot.urls"
ASGI_APPLICATION = "chatbot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Connections are reused, not opened for each call: a socket's database calls all run on one thread
# per web process (Channels' database_sync_to_async), and opening a connection for each of them was
# a tenth of the web tier's time (docs/web-tier.md). On PostgreSQL from a pool of at most
# DATABASE_POOL_MAX a process, which also bounds them: Django runs each page on a thread of its own,
# and a burst of visitors opened more connections than the server takes (max_connections). SQLite
# keeps each thread's connection DATABASE_CONN_MAX_AGE seconds. Both are checked before reuse.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_int("DATABASE_POOL_MAX", 10) > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_MAX", 10),
        "timeout": env_float("DATABASE_POOL_TIMEOUT_S", 30.0),  # a call waits this long for a free one
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, inference worker, Celery) share the file: wait for locks, use WAL.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not memory) so test subprocesses share it; one per test process, so runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 times reads out after 5 s by default, which is exactly how long channels-redis
        # blocks waiting for a message: without this, idle sockets die with "Timeout reading".
        "CONFIG": {
            # Each web process sends its sockets' frames concurrently: a burst of customers needs
            # more than redis-py's 100 connections at once, and past them a send fails outright.
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": None,
                    "max_connections": env_int("CHANNEL_REDIS_MAX_CONNECTIONS", 1000),
                }
            ],
            "prefix": env_str("CHANNEL_PREFIX", "chatbot"),
            # Every socket of a web process shares one Redis queue (channels-redis keys a process's
            # channels together), and a group send to a full queue drops the frame without a word:
            # at the default of 100, a burst of replies lost their done frames (docs/web-tier.md).
            "capacity": env_int("CHANNEL_CAPACITY", 20000),
        },
    }
}

CACHES = {
    # Per process; nothing that must be shared between processes uses it.
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # The failed-login counts (conversations/login_throttle.py), shared by every web process. Keys
    # under REDIS_KEY_PREFIX (read when each key is made). Never clear() it: that flushes the database.
    "login_throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "login-throttle",
        "KEY_FUNCTION": "conversations.login_throttle.cache_key",
    },
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"

# The customer chat.
# Knowledge entries (docs/knowledge.md, where the defaults' figures are): how many approved entries
# a reply may be grounded on, the cosine a question needs to get one, and the cosine above which a
# new suggestion counts as the same question as an existing entry.
KNOWLEDGE_TOP_K = env_int("KNOWLEDGE_TOP_K", 3)
KNOWLEDGE_THRESHOLD = env_float("KNOWLEDGE_THRESHOLD", 0.58)
KNOWLEDGE_GROUP_THRESHOLD = env_float("KNOWLEDGE_GROUP_THRESHOLD", 0.72)
# A grounded reply starts with the best entry's approved answer, word for word, and the model goes
# on from there, when that entry reaches this cosine and leads the runner-up by the margin; other
# grounded replies only carry the entries in their prompt. Above 1 turns the leading answer off.
KNOWLEDGE_LEAD_THRESHOLD = env_float("KNOWLEDGE_LEAD_THRESHOLD", 0.58)
KNOWLEDGE_LEAD_MARGIN = env_float("KNOWLEDGE_LEAD_MARGIN", 0.05)
# When on, a reply grounded on knowledge entries shows the customer "Source: <question>" under it
# (the entries' questions only). Off by default: what an answer rests on is the agents' business
# until an admin chooses to say it.
KNOWLEDGE_SHOW_SOURCES = env_bool("KNOWLEDGE_SHOW_SOURCES", False)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000)
CHAT_RATE_LIMIT_MESSAGES = env_int("CHAT_RATE_LIMIT_MESSAGES", 6)
CHAT_RATE_LIMIT_WINDOW_S = env_int("CHAT_RATE_LIMIT_WINDOW_S", 30)
CHAT_RATE_LIMIT_CONVERSATIONS = env_int("CHAT_RATE_LIMIT_CONVERSATIONS", 5)
CHAT_STREAM_FLUSH_MS = env_int("CHAT_STREAM_FLUSH_MS", 80)
# Abuse limits (conversations/limits.py), counted in Redis per client address (TRUSTED_PROXY_HOPS-aware)
# by every web process together; each in docs/settings.md.
CHAT_ADDRESS_CUSTOMERS = env_int("CHAT_ADDRESS_CUSTOMERS", 20)
CHAT_ADDRESS_CUSTOMERS_WINDOW_S = env_int("CHAT_ADDRESS_CUSTOMERS_WINDOW_S", 600)
CHAT_ADDRESS_SOCKETS = env_int("CHAT_ADDRESS_SOCKETS", 60)
CHAT_ADDRESS_FRAMES = env_int("CHAT_ADDRESS_FRAMES", 120)
CHAT_ADDRESS_WINDOW_S = env_int("CHAT_ADDRESS_WINDOW_S", 60)
CHAT_SOCKETS_PER_CUSTOMER = env_int("CHAT_SOCKETS_PER_CUSTOMER", 5)
# Suggested questions (the most used approved knowledge entries) on the page at /; each widget
# site has a switch of its own.
CHAT_SUGGESTIONS = env_bool("CHAT_SUGGESTIONS", True)

# The embeddable widget (docs/widget.md). Origins (scheme://host[:port]) allowed to embed every
# site's widget, beside each site's own list in /agent/widget/: for a deployment's own pages.
WIDGET_ALLOWED_ORIGINS = env_list("WIDGET_ALLOWED_ORIGINS", "")

# The inference worker and the model it serves.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "chatbot")
BASE_MODEL = env_str("BASE_MODEL", "")  # empty: the packaged SmolLM2-135M-Instruct, converted once
MODEL_CACHE_DIR = Path(env_str("MODEL_CACHE_DIR", str(BASE_DIR / ".cache" / "models")))
ADAPTERS_DIR = Path(env_str("ADAPTERS_DIR", str(BASE_DIR / "var" / "adapters")))
# What generates: the built-in engine in the worker's process, or a vLLM server (docs/vllm.md).
INFERENCE_BACKEND = env_str("INFERENCE_BACKEND", "builtin")  # builtin | vllm
VLLM_URL = env_str("VLLM_URL", "http://127.0.0.1:8100")  # this worker's server; one per worker process
VLLM_MODEL = env_str("VLLM_MODEL", "")  # empty: the server's only model, as /v1/models lists it
# ADAPTERS_DIR as the vLLM server sees it, where it runs elsewhere (a container mounting the
# folder); empty: the same path.
VLLM_ADAPTERS_DIR = env_str("VLLM_ADAPTERS_DIR", "")
INFERENCE_DEVICE = env_str("INFERENCE_DEVICE", "auto")  # auto | cpu | cuda
INFERENCE_DTYPE = env_str("INFERENCE_DTYPE", "auto")  # auto: bf16 on CUDA, bf16 CPUs | fp32 | bf16 | fp16
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 0)  # 0: torch's default
INFERENCE_MAX_RUNNING = env_int("INFERENCE_MAX_RUNNING", 32)
INFERENCE_MAX_QUEUE = env_int("INFERENCE_MAX_QUEUE", 256)
INFERENCE_MAX_WAITING = env_int("INFERENCE_MAX_WAITING", 256)
# Prompt tokens whose keys and values the engine keeps for reuse (shared system prompt, earlier
# turns); about 46 KB a token for the default model in fp32. 0 turns prefix caching off.
INFERENCE_PREFIX_CACHE_TOKENS = env_int("INFERENCE_PREFIX_CACHE_TOKENS", 4096)
INFERENCE_REPLY_TIMEOUT_S = env_float("INFERENCE_REPLY_TIMEOUT_S", 120.0)
# A reply still pending this long with no request in the Redis stream is queued again.
INFERENCE_REQUEUE_AFTER_S = env_float("INFERENCE_REQUEUE_AFTER_S", 30.0)
INFERENCE_CONTEXT_TOKENS = env_int("INFERENCE_CONTEXT_TOKENS", 2048)
# The inference worker's loops retry their errors with backoff; one failing (or stuck) this long
# ends the worker with exit status 1, so a supervisor restarts it instead of it sitting deaf.
INFERENCE_LOOP_FAIL_LIMIT_S = env_float("INFERENCE_LOOP_FAIL_LIMIT_S", 60.0)
GENERATION_TEMPERATURE = env_float("GENERATION_TEMPERATURE", 0.3)
GENERATION_TOP_P = env_float("GENERATION_TOP_P", 0.9)
GENERATION_TOP_K = env_int("GENERATION_TOP_K", 50)
GENERATION_REPETITION_PENALTY = env_float("GENERATION_REPETITION_PENALTY", 1.1)
GENERATION_MAX_NEW_TOKENS = env_int("GENERATION_MAX_NEW_TOKENS", 200)
GENERATION_SEED = os.environ.get("GENERATION_SEED")  # unset: a fresh seed per reply
DEFAULT_SYSTEM_PROMPT = env_str(
    "DEFAULT_SYSTEM_PROMPT",
    "You are the friendly customer-service assistant of our shop. Answer briefly and politely. "
    "If you do not know something, say so and offer to connect the customer with a person.",
)

# The learning loop (docs/learning-loop.md), read through finetuning/conf.py; the defaults suit the
# default model on a few CPU cores.
FINETUNING_CACHE_DIR = env_str("FINETUNING_CACHE_DIR", str(BASE_DIR / ".cache" / "finetuning"))
FINETUNING_CHECKPOINTS_DIR = env_str("FINETUNING_CHECKPOINTS_DIR", str(BASE_DIR / "var" / "checkpoints"))
FINETUNING_LEASE_S = env_int("FINETUNING_LEASE_S", 120)
FINETUNING_SWEEP_S = env_float("FINETUNING_SWEEP_S", 30.0)
FINETUNING_RETENTION_EVERY_S = env_float("FINETUNING_RETENTION_EVERY_S", 3600.0)
FINETUNING_THREADS = env_int("FINETUNING_THREADS", 0)  # 0: half the cores, at least one
FINETUNING_CPU_PRIORITY = env_str("FINETUNING_CPU_PRIORITY", "idle")  # idle | nice | normal
FINETUNING_GENERAL_EXAMPLES = env_int("FINETUNING_GENERAL_EXAMPLES", 40)
FINETUNING_EVAL_MAX_NEW_TOKENS = env_int("FINETUNING_EVAL_MAX_NEW_TOKENS", 32)
FINETUNING_EVAL_MAX_REPLAYS = env_int("FINETUNING_EVAL_MAX_REPLAYS", 24)
FINETUNING_PROBE_PARAPHRASES = env_int("FINETUNING_PROBE_PARAPHRASES", 2)
FINETUNING_PROBE_MAX_FACTS = env_int("FINETUNING_PROBE_MAX_FACTS", 40)
FINETUNING_PROBE_MIN_SIMILARITY = env_float("FINETUNING_PROBE_MIN_SIMILARITY", 0.6)
FINETUNING_PROBE_UNRELATED = env_int("FINETUNING_PROBE_UNRELATED", 0)  # 0: all of them
FINETUNING_CHECK_MIN_EXAMPLES = env_int("FINETUNING_CHECK_MIN_EXAMPLES", 5)
# A dataset build unchanged this long lost its worker: it fails, and a new one may start.
FINETUNING_BUILD_STALE_S = env_int("FINETUNING_BUILD_STALE_S", 1800)
# Knowledge in training (docs/knowledge.md): phrasings per corrected question, the shares of
# examples that carry retrieved entries (RAFT), and the preference step on the stored pairs.
FINETUNING_PARAPHRASES = env_int("FINETUNING_PARAPHRASES", 0)  # 0: off (bench: +recall, +leaks; docs/knowledge.md)
FINETUNING_PARAPHRASE_MAX_QUESTIONS = env_int("FINETUNING_PARAPHRASE_MAX_QUESTIONS", 400)
FINETUNING_PARAPHRASE_MIN_SIMILARITY = env_float("FINETUNING_PARAPHRASE_MIN_SIMILARITY", 0.6)
FINETUNING_RAFT_WITH_ANSWER = env_float("FINETUNING_RAFT_WITH_ANSWER", 0.0)
FINETUNING_RAFT_DISTRACTORS_ONLY = env_float("FINETUNING_RAFT_DISTRACTORS_ONLY", 0.0)
FINETUNING_DPO_STEPS = env_int("FINETUNING_DPO_STEPS", 0)  # 0: SFT alone
FINETUNING_DPO_BETA = env_float("FINETUNING_DPO_BETA", 0.1)
FINETUNING_DPO_SFT_WEIGHT = env_float("FINETUNING_DPO_SFT_WEIGHT", 1.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

# `serve` (docs/deployment.md): how it restarts a child that dies, and how long /healthz waits on
# each part it checks.
SERVE_RESTART_BACKOFF_S = env_float("SERVE_RESTART_BACKOFF_S", 1.0)
SERVE_RESTART_BACKOFF_MAX_S = env_float("SERVE_RESTART_BACKOFF_MAX_S", 30.0)
SERVE_STABLE_AFTER_S = env_float("SERVE_STABLE_AFTER_S", 60.0)
HEALTH_CHECK_TIMEOUT_S = env_float("HEALTH_CHECK_TIMEOUT_S", 2.0)


def _make_dirs(*paths: Path) -> None:
    """The folders the defaults put files in, made on any start (a fresh clone's `migrate` too)."""
    for path in paths:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:  # not ours to make (a read-only mount): whatever writes there says so then
            pass


_make_dirs(
    BASE_DIR / "var",
    *([Path(DATABASES["default"]["NAME"]).parent] if DATABASES["default"]["ENGINE"].endswith("sqlite3") else []),
    ADAPTERS_DIR,
    MODEL_CACHE_DIR,
)

# The agent workspace (docs/agent-workspace.md; each setting in docs/settings.md).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "agent-inbox"
LOGOUT_REDIRECT_URL = "login"
AGENT_INBOX_PAGE_SIZE = env_int("AGENT_INBOX_PAGE_SIZE", 25)
# A new handoff request is assigned round-robin among the agents online now (a workspace socket open).
INBOX_AUTO_ASSIGN = env_bool("INBOX_AUTO_ASSIGN", False)
# How long the web process gathers the conversations customers wrote in before it sends their inbox
# rows to the agents, all read in one go (conversations/events.py, InboxAnnouncer); 0: one by one.
INBOX_COALESCE_MS = env_int("INBOX_COALESCE_MS", 200)
# How long an agent counts as online after their socket last said so (it does every 30 s).
INBOX_PRESENCE_TTL_S = env_int("INBOX_PRESENCE_TTL_S", 90)
LOGIN_THROTTLE_FAILURES = env_int("LOGIN_THROTTLE_FAILURES", 5)
LOGIN_THROTTLE_WINDOW_S = env_int("LOGIN_THROTTLE_WINDOW_S", 300)
# Reverse proxies in front of the web process that append to X-Forwarded-For; 0: use REMOTE_ADDR.
TRUSTED_PROXY_HOPS = env_int("TRUSTED_PROXY_HOPS", 0)
HANDOFF_PHRASES = env_list(
    "HANDOFF_PHRASES", "human,agent,real person,talk to a person,speak to a person,operator,representative"
)
AUTHENTICATION_BACKENDS = ["conversations.login_throttle.ThrottledModelBackend"]
