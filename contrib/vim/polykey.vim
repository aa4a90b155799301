" polykey.vim: keep files under a Polykey mount out of vim's swap, backup, undo and
" viminfo/shada files (in the spirit of pass's redact_pass.vim).
"
" Install: copy to ~/.vim/plugin/ (neovim: ~/.config/nvim/plugin/), or `source` it from your
" vimrc. A file counts as under a Polykey mount when its resolved path lies under a mount of
" type fuse.polykey in /proc/mounts, or matches a glob in g:polykey_patterns (for systems
" without /proc/mounts), e.g.  let g:polykey_patterns = ['~/polykey/*']
"
" For such a buffer: no swap file, no undo file, no backup or write-backup. Registers, search,
" command and substitution history are written to viminfo (shada) for the whole session, so
" once such a file is opened, viminfo is turned off for the rest of the session: what you
" yanked or searched for in other files before is not saved either. Nothing here stops you
" from writing the buffer elsewhere yourself (:w /tmp/x), or a plugin from doing so.
" `polykey edit REPO/SECRET` does all of this without the snippet.

if exists('g:loaded_polykey')
  finish
endif
let g:loaded_polykey = 1

function! s:Mountpoints() abort
  if !filereadable('/proc/mounts')
    return []
  endif
  let l:points = []
  for l:line in readfile('/proc/mounts')
    let l:f = split(l:line, ' ')
    if len(l:f) >= 3 && l:f[2] ==# 'fuse.polykey'
      " /proc/mounts writes space, tab, newline and backslash as octal escapes.
      call add(l:points, substitute(l:f[1], '\\\(\o\o\o\)', '\=nr2char(str2nr(submatch(1), 8))', 'g'))
    endif
  endfor
  return l:points
endfunction

function! s:UnderPolykey(name) abort
  let l:path = resolve(fnamemodify(a:name, ':p'))
  for l:m in s:Mountpoints()
    if l:path ==# l:m || stridx(l:path, l:m . '/') == 0
      return 1
    endif
  endfor
  for l:glob in get(g:, 'polykey_patterns', [])
    if l:path =~# glob2regpat(fnamemodify(expand(l:glob), ':p'))
      return 1
    endif
  endfor
  return 0
endfunction

function! s:Protect() abort
  if !s:UnderPolykey(expand('<afile>'))
    return
  endif
  setlocal noswapfile noundofile nobackup nowritebackup
  if has('nvim')
    set shada=
    if exists('+shadafile')
      set shadafile=NONE
    endif
  else
    set viminfo=
    if exists('+viminfofile')
      set viminfofile=NONE
    endif
  endif
endfunction

augroup polykey
  autocmd!
  " BufReadPre: before the swap file would be made and any undo file read.
  autocmd BufNewFile,BufReadPre,BufWritePre,FileWritePre * call s:Protect()
augroup END
