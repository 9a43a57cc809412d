"""The Gradio shell: one file per tab, each a build_*_tab(ctx). Only this package imports gradio."""
