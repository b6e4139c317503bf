FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md ./
COPY harweb harweb
COPY annotator annotator
COPY training training
COPY templates templates
COPY manage.py ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt . \
 && pip install --no-deps open-clip-torch==3.3.0
