FROM python:3.11-slim
WORKDIR /app
COPY . .
# One image for the service (with the experiment report pages) and the trainer.
RUN pip install --no-cache-dir ".[all]"
EXPOSE 8000
CMD ["closedloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
