"""Stateless inference workers: frames -> LiteRT CNN -> verdicts, scaled out by shared subscription."""
