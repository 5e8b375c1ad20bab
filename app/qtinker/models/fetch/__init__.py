"""Getting a model's files onto this machine: http (resumable transfer), archive (a Google-layout zip:
verify, extract, convert), hub (a Hugging Face Hub snapshot). models.download is the public door."""
