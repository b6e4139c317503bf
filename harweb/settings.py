"""Django settings for HARweb, all from environment variables.

With no variables set the app runs self-contained: SQLite, a filesystem Celery
broker and media under ``var/``. ``DATABASE_URL`` and ``REDIS_URL`` switch to
PostgreSQL and Redis for production.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from harweb.env import env_bool, env_float, env_int, env_list, env_path, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("HARWEB_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("HARWEB_DEBUG", True)
# The default key is fine for the embedded demo only; production sets its own.
SECRET_KEY = env_str(
    "HARWEB_SECRET_KEY", "dev-insecure-harweb-key-change-me-in-production"
)
ALLOWED_HOSTS = env_list("HARWEB_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("HARWEB_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "annotator",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "harweb.urls"
WSGI_APPLICATION = "harweb.wsgi.application"

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
    }
]


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if url:
        return dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    # SQLite shared by the web server and the worker: WAL lets readers run
    # beside a writer, IMMEDIATE avoids lock upgrades that fail under load.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Sessions read from the process cache, written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "harweb" / "static"]
MEDIA_ROOT = env_path("HARWEB_MEDIA_ROOT", VAR_DIR / "media")
MEDIA_URL = "/media/"

# Uploads stream to temporary files; the app checks size itself so that the
# user gets a clear message instead of a generic 413.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
}

# --- Celery -----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
else:
    # A broker that needs no server: messages are files, polled every 0.1 s.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("HARWEB_TASKS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"training.tasks.*": {"queue": "gpu"}}
# Publishing must not hang a web request when the broker is down: the row
# stays queued and the sweeper re-sends it once the broker is back.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-work": {
        "task": "annotator.tasks.requeue_stale",
        "schedule": env_float("HARWEB_SWEEP_SECONDS", 60.0),
    },
    "check-retrain": {
        "task": "training.tasks.check_retrain",
        "schedule": env_float("HARWEB_RETRAIN_CHECK_SECONDS", 180.0),
        "options": {"queue": "celery"},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- HARweb -----------------------------------------------------------------
HARWEB_CLIP_MODEL = env_str("HARWEB_CLIP_MODEL", "openai/clip-vit-base-patch32")
HARWEB_MAX_UPLOAD_MB = env_int("HARWEB_MAX_UPLOAD_MB", 2048)
HARWEB_MAX_DURATION_S = env_float("HARWEB_MAX_DURATION_S", 3 * 3600.0)
HARWEB_DEVICE = env_str("HARWEB_DEVICE", "auto")
HARWEB_CLAIM_SECONDS = env_int("HARWEB_CLAIM_SECONDS", 300)
HARWEB_REQUIRE_SERVICES = env_bool("HARWEB_REQUIRE_SERVICES", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Libraries log chattily at INFO (onnxruntime's quantizer: one line per
    # tensor); the root stays at WARNING and our own modules speak at INFO.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"level": env_str("HARWEB_LOG_LEVEL", "INFO")}
        for name in ("harweb", "annotator", "training", "django")
    },
}
