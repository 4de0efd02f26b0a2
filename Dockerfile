# logowatch: one image for every role (ingest, detect, migrate, report...).
# CPU by default; build the GPU variant with --build-arg EXTRAS=gpu.

# The wheel is built in a stage of its own, so neither the sources nor the build's leftovers
# (build/, *.egg-info) reach the image.
FROM python:3.11.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY detector ./detector
COPY logowatch ./logowatch
COPY workers ./workers
COPY analytics ./analytics
COPY migrations ./migrations
COPY bench ./bench
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 LOGOWATCH_CACHE=/opt

RUN useradd --create-home --uid 10001 logowatch
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install "$(ls /wheels/*.whl)${EXTRAS:+[$EXTRAS]}"
# Bake the ImageNet-derived backbone weights (npm package nsfwjs, MIT) into the image, so a
# detector starts air-gapped; Node and npm are needed for the import only. libcairo2 stays:
# CairoSVG renders SVG logos with it (`brands add --logo mark.svg`).
RUN apt-get update && apt-get install -y --no-install-recommends libcairo2 nodejs npm \
    && logowatch weights import nsfwjs --no-progress \
    && apt-get purge -y nodejs npm && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* ~/.npm \
    && chmod -R a+rX /opt/logowatch
# And Keras's own ImageNet file, for bundles trained with --weights imagenet: without it each
# detector container downloads it at start, into a home lost on recreation, and air-gapped
# fails.
ENV KERAS_HOME=/opt/keras
RUN python -c "import keras; keras.applications.InceptionV3(include_top=False, weights='imagenet')" \
    && chmod -R a+rX /opt/keras

USER logowatch
WORKDIR /home/logowatch
EXPOSE 9751 8751
ENTRYPOINT ["logowatch"]
CMD ["--help"]
