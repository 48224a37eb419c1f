complete --keep-order --exclusive --command sessionpipe --arguments "(COMPLETE=fish sessionpipe -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
