# base/git_revision.cmake without a revision to find: outside a git
# checkout, and with git missing, it writes GitRevision() as "" (so the
# version line is "PROGRAM 0.1.0"), and it never fails the build. From a git
# checkout with git, it names the revision. Run by ctest:
#   cmake -DSCRIPT=base/git_revision.cmake -DSOURCE_DIR=DIR -DWORK=DIR -DGIT=PATH -P THIS
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/not_a_checkout")

function(generate source git out)
  execute_process(
    # WORK may lie in a checkout (the build directory's): git looks no higher.
    COMMAND ${CMAKE_COMMAND} -E env GIT_CEILING_DIRECTORIES=${WORK}
            ${CMAKE_COMMAND} -DSOURCE_DIR=${source} -DOUT=${out} -DGIT=${git} -P ${SCRIPT}
    RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "git_revision.cmake failed (${status}) for SOURCE_DIR=${source} GIT=${git}")
  endif()
endfunction()

function(expect_revision out expected)
  file(READ "${out}" text)
  if(NOT text MATCHES "GitRevision\\(\\) { return \"([^\"]*)\"; }")
    message(FATAL_ERROR "${out} defines no GitRevision():\n${text}")
  endif()
  set(found "${CMAKE_MATCH_1}")
  if(expected STREQUAL "none")
    set(ok FALSE)
    if(found STREQUAL "")
      set(ok TRUE)
    endif()
  elseif("${found}" MATCHES "${expected}")
    set(ok TRUE)
  endif()
  if(NOT ok)
    message(FATAL_ERROR "${out}: GitRevision() is \"${found}\", expected ${expected}")
  endif()
endfunction()

generate("${WORK}/not_a_checkout" "${GIT}" "${WORK}/outside.cc")
expect_revision("${WORK}/outside.cc" "none")
generate("${SOURCE_DIR}" "${WORK}/no/such/git" "${WORK}/no_git.cc")
expect_revision("${WORK}/no_git.cc" "none")
generate("${SOURCE_DIR}" "" "${WORK}/git_off.cc")  # -DDROPK_GIT_REVISION=OFF
expect_revision("${WORK}/git_off.cc" "none")
if(GIT AND EXISTS "${SOURCE_DIR}/.git")
  generate("${SOURCE_DIR}" "${GIT}" "${WORK}/checkout.cc")
  expect_revision("${WORK}/checkout.cc" "^[0-9A-Za-z._+-]*[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]")
endif()
file(REMOVE_RECURSE "${WORK}")
