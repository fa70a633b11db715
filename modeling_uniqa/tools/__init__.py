"""The user's tools: the `uniqa` command (`cli`), batch scoring of files, checkpoint conversion, ONNX export and
evaluation on image + MOS tables. Built on the model package (`modeling_uniqa`), never copied to the Hub."""
