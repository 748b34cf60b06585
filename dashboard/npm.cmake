# Install the dashboard's npm packages into a build directory and copy the
# files the page loads next to the Lua modules:
#
#   cmake -DSRC=<dashboard dir> -DOUT=<build>/npm -DVENDOR=<dir> -DNPM=<npm> -P npm.cmake
#
# `npm ci` installs exactly package-lock.json.  Without npm, or when the
# registry cannot be reached, the build goes on: the page then draws no
# charts, and the browser spec says it is pending.
file(MAKE_DIRECTORY ${OUT})
file(COPY ${SRC}/package.json ${SRC}/package-lock.json DESTINATION ${OUT})
execute_process(COMMAND ${NPM} ci --no-audit --no-fund --loglevel=error
  WORKING_DIRECTORY ${OUT} RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(WARNING "npm ci failed (${status}): the dashboard will draw no charts")
  return()
endif()
set(dist ${OUT}/node_modules/uplot/dist)
file(MAKE_DIRECTORY ${VENDOR})
file(COPY ${dist}/uPlot.iife.min.js ${dist}/uPlot.min.css
  ${OUT}/node_modules/uplot/LICENSE DESTINATION ${VENDOR})
file(READ ${OUT}/node_modules/uplot/package.json manifest)
string(JSON version GET "${manifest}" version)
file(WRITE ${VENDOR}/VERSIONS "uplot ${version} (MIT, see LICENSE)\n")
