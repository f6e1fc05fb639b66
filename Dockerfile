# rlhf-lab web app and worker image. Build the training image with --build-arg EXTRAS=train.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/rlhf-lab
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY trainers ./trainers
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir -e ".${EXTRAS:+[$EXTRAS]}" \
 && useradd --create-home --uid 1000 rlhf && mkdir -p /data && chown rlhf /data
USER rlhf
ENV RLHF_ARTIFACT_DIR=/data/artifacts
EXPOSE 8000
CMD ["rlhf", "serve", "--host", "0.0.0.0", "--port", "8000"]
