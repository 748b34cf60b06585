/* The cookie file, for mb_dist_default_cookie.  As Erlang:
 * $HOME/.erlang.cookie, else $XDG_CONFIG_HOME/erlang/.erlang.cookie; when
 * neither exists, $HOME/.erlang.cookie is created with 20 random
 * upper-case letters, mode 0400.  A file others may read is refused. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "dist_internal.h"

static int read_cookie(const char *path, char *out, size_t len) {
  struct stat st;
  if (stat(path, &st) != 0)
    return MB_ENOTFOUND;
  if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
    mb_log(MB_LOG_ERROR,
           "dist: cookie file %s must be accessible by its owner only", path);
    return MB_EINVAL;
  }
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return MB_EINVAL;
  size_t n = fread(out, 1, len - 1, f);
  fclose(f);
  out[n] = '\0';
  /* Printable characters up to the first other one; trailing spaces kept. */
  size_t i = 0;
  while (i < n && out[i] >= 0x20 && out[i] <= 0x7e)
    i++;
  out[i] = '\0';
  return i == 0 ? MB_EINVAL : 0;
}

int mb_dist_default_cookie(char *out, size_t len) {
  const char *home = getenv("HOME");
  char path[1024];
  if (home != NULL) {
    snprintf(path, sizeof path, "%s/.erlang.cookie", home);
    int err = read_cookie(path, out, len);
    if (err != MB_ENOTFOUND)
      return err;
  }
  const char *xdg = getenv("XDG_CONFIG_HOME");
  char xpath[1024];
  if (xdg != NULL)
    snprintf(xpath, sizeof xpath, "%s/erlang/.erlang.cookie", xdg);
  else if (home != NULL)
    snprintf(xpath, sizeof xpath, "%s/.config/erlang/.erlang.cookie", home);
  else
    xpath[0] = '\0';
  if (xpath[0]) {
    int err = read_cookie(xpath, out, len);
    if (err != MB_ENOTFOUND)
      return err;
  }
  if (home == NULL || len < 21)
    return MB_ENOTFOUND;
  unsigned char r[20];
  if (RAND_bytes(r, sizeof r) != 1)
    return MB_EINVAL;
  for (int i = 0; i < 20; i++)
    out[i] = (char)('A' + r[i] % 26);
  out[20] = '\0';
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0400);
  if (fd < 0)
    return MB_EINVAL;
  ssize_t w = write(fd, out, 20);
  close(fd);
  return w == 20 ? 0 : MB_EINVAL;
}
