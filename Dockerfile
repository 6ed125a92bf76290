FROM python:3.11-slim
WORKDIR /app
# torch's CPU wheel before Ax (the tuner), or pip pulls the CUDA build and gigabytes with it.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . .
# One image for the service (with the experiment report pages), the trainer and the tuner.
RUN pip install --no-cache-dir ".[all]"
EXPOSE 8000
CMD ["closedloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
