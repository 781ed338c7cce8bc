#compdef ppec

_ppec_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _PPEC_COMPLETE=complete_zsh ppec)
}

compdef _ppec_completion ppec
